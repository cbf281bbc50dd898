"""The model store and architecture adapters."""
