"""The global random generators (Python, NumPy, torch) as unit tensors, so a replayed stage leaves them as the original run did."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def rng_unit() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    version, state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors = {"rng.torch": torch.get_rng_state(), "rng.python": torch.tensor(state, dtype=torch.int64),
               "rng.numpy": torch.from_numpy(keys.astype(np.int64))}
    return tensors, {"python_version": version, "python_gauss": gauss, "numpy_kind": kind, "numpy_pos": int(pos),
                     "numpy_has_gauss": int(has_gauss), "numpy_cached": float(cached)}


def restore_rng(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    random.setstate((meta["python_version"], tuple(int(v) for v in tensors["rng.python"].tolist()), meta["python_gauss"]))
    np.random.set_state((meta["numpy_kind"], tensors["rng.numpy"].numpy().astype(np.uint32), meta["numpy_pos"],
                         meta["numpy_has_gauss"], meta["numpy_cached"]))
