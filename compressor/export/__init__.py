"""Writing compressed checkpoints and their manifests."""
