"""The REST service: FastAPI app, storage and settings. Never imports torch."""
