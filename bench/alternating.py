"""Side-by-side benches: variants run alternately in fresh processes on one store, medians and ratios.

Alternating (a, b, a, b, ...) makes a noisy machine slow every variant alike, so the ratio
between them is what a bench reports, not a time against a number from another day.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

Variant = Callable[[Path, Path], dict[str, Any]]  # (store home, output folder) -> measured


def alternate(variants: dict[str, Variant], repeat: int) -> dict[str, list[dict[str, Any]]]:
    """Each variant `repeat` times, in turn, against one fresh store holding the bundled model."""
    from compressor.models.store import ModelStore

    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in variants}
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        ModelStore(home).import_bundled()
        for i in range(repeat):
            for name, variant in variants.items():
                runs[name].append(variant(home, Path(tmp) / f"{name}-{i}"))
                print(name, json.dumps(runs[name][-1]), file=sys.stderr, flush=True)
    return runs


def medians(runs: dict[str, list[dict[str, Any]]], metrics: tuple[str, ...]) -> dict[str, dict[str, float]]:
    return {k: {m: statistics.median(r[m] for r in v) for m in metrics} for k, v in runs.items()}


def ratios(med: dict[str, dict[str, float]], this: str, other: str) -> dict[str, float]:
    return {m: round(med[this][m] / med[other][m], 3) for m in med[this]}


def write_result(out: Path, result: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
