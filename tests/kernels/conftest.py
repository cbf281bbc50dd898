"""Run the Triton kernels in the CPU interpreter.

``@triton.jit`` reads TRITON_INTERPRET when the decorator runs, so it is set here, before any
kernel module is imported. (If something imports ``triton_kernels`` before this file runs, the
kernel launchers refuse CPU tensors with a message saying so; set the variable earlier then.)
Test modules that launch kernels call ``pytest.importorskip("triton")``, so they skip cleanly
without triton while the packing and native-CPU tests still run.
"""

import os

os.environ["TRITON_INTERPRET"] = "1"
