"""Equivalent transforms: Hadamard matrices, weight fusion, rotation methods."""
