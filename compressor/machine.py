"""What the job ran on: CPU model, ISA flags, threads, GPU — recorded in the report and the manifest.

Float kernels differ legitimately between CPUs (AVX2 and AVX-512 reduce in different orders,
about 0.5% in perplexity on the bundled model), so a number means little without the machine
it came from. `device_kind` is the part of it that changes results, and goes into the
resume fingerprint.
"""

from __future__ import annotations

import platform
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel

# The flags that select torch's CPU kernels (ATen dispatches on these families).
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
             "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve")


class MachineInfo(BaseModel):
    cpu_model: str
    isa_flags: list[str]
    aten_cpu_capability: str
    threads: int
    device: str
    gpu_name: str | None = None
    cuda_driver: str | None = None

    @property
    def device_kind(self) -> str:
        """What the fingerprint compares: the kernel family results depend on (CPU ISA level or GPU model)."""
        if self.gpu_name:
            return f"cuda:{self.gpu_name}"
        return f"cpu:{self.aten_cpu_capability}"


@lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, tuple[str, ...]]:
    model, flags = platform.processor() or platform.machine(), set()
    path = Path("/proc/cpuinfo")
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
    return model, tuple(f for f in ISA_FLAGS if f in flags)


def machine_info(device: str = "cpu") -> MachineInfo:
    import torch

    model, flags = _cpuinfo()
    gpu = driver = None
    if device.startswith("cuda") and torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(torch.device(device))
        driver = torch.version.cuda
    return MachineInfo(cpu_model=model, isa_flags=list(flags), aten_cpu_capability=torch.backends.cpu.get_cpu_capability(),
                       threads=torch.get_num_threads(), device=device, gpu_name=gpu, cuda_driver=driver)
