"""The service core that `api/` and `workers/` stand on: settings, the database, artifact stores.

It imports nothing of `api/` or `workers/` (tests/test_layering.py), and never torch.
"""
