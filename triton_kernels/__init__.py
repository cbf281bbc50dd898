"""Low-bit matmul kernels: Triton on CUDA, native torch ops on CPU, a torch reference beside each.

Importing this package does not import triton. The kernel modules do, but still provide their
references (and QuantLinear its CPU paths) when triton is missing; only the launchers need it.
"""
