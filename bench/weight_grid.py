"""Is the bundled model's weight already on a 4-bit grid? Distinct values per group of 32, per tensor kind.

SmolLM2-135M ships as GGUF Q4_1 (asymmetric 4-bit, groups of 32): every decoder linear holds at
most 16 distinct values per 32 consecutive inputs. A group quantizer aligned with those groups
(RTN int4 g32/g64, NVFP4 g16, MXFP4 g32) starts next to that grid; a rotation mixes every
input channel and removes it. That is why rotations before RTN lose on this model while
published results on bf16-trained weights show them helping: read the rotation rows in
`quality.json` with this file beside them.

    .venv/bin/python bench/weight_grid.py
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results" / "weight_grid.json"
GROUP = 32
SAMPLE_GROUPS = 4096  # groups read per tensor (evenly spaced)


def distinct_per_group(w: torch.Tensor) -> torch.Tensor:
    groups = w.detach().reshape(-1, GROUP)
    picked = groups[torch.linspace(0, groups.shape[0] - 1, min(SAMPLE_GROUPS, groups.shape[0])).long()]
    ordered = picked.sort(dim=1).values
    return 1 + (ordered[:, 1:] != ordered[:, :-1]).sum(dim=1)


def main() -> int:
    from compressor.machine import machine_info
    from compressor.models.store import ModelStore
    from compressor.paths import compressor_home

    model, _ = ModelStore(compressor_home()).load("smollm2-135m", dtype=torch.float32)
    by_kind: dict[str, list[torch.Tensor]] = defaultdict(list)
    for name, p in model.named_parameters():
        if p.dim() == 2 and p.shape[1] % GROUP == 0:
            by_kind[name.split(".")[-2]].append(distinct_per_group(p))
    rows = []
    for kind, counts in sorted(by_kind.items()):
        c = torch.cat(counts).float()
        rows.append({"tensor": kind, "tensors": len(counts), "groups_read": int(c.numel()), "max_distinct": int(c.max()),
                     "mean_distinct": round(float(c.mean()), 2), "share_at_most_16": round(float((c <= 16).float().mean()), 4)})
    out = {"group": GROUP, "rows": rows, "machine": machine_info("cpu").model_dump(mode="json")}
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    for r in rows:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
