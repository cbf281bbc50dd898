"""`CheckpointStore`: a job's resume state in one folder — finished units of work, journaled.

A *unit* is what a stage can skip on resume: one decoder layer's quantized weights, the
training state after step k, one dataset's scores. Each unit is one safetensors file
(tensors) plus its entry in `journal.json` (metadata, bytes, seconds it took). Writes are
atomic: the file goes to a temporary name and is renamed, then the journal is replaced the
same way, so a unit is either listed and whole or absent; files the journal does not list
(a write cut by a kill) are deleted when the store opens. Step units of one series replace
each other (only the newest is kept), which bounds disk use to the layers done plus one
training state.

A store opened with `folder=None` records nothing and finds nothing: jobs without resume
run the same code. An `observer` hears of every change (files written, then files removed,
relative to the folder, the journal last among the written), which is how the service
mirrors the folder to an object store that other hosts resume from.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from compressor.checkpoints import failpoint
from compressor.checkpoints.fingerprint import Fingerprint

Observer = Callable[[Path, list[str], list[str]], None]  # (folder, written, removed)
JOURNAL = "journal.json"
INTERVAL_ENV = "COMPRESSOR_CHECKPOINT_INTERVAL_S"  # training state at most this often (default 60 s); 0: every step
UNITS_DIR = "units"


@dataclass
class Unit:
    """One finished piece of work: its tensors and JSON-able metadata."""

    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]
    seconds: float = 0.0


@dataclass
class ResumeInfo:
    """What a resumed run reused: for the events and the report."""

    attempt: int
    resumed_from: str | None = None  # e.g. "stage 2/3 quantize, layer 17 of 30"
    units_reused: int = 0
    seconds_saved: float = 0.0
    fresh_reason: str | None = None  # why an existing checkpoint was not used
    bytes_written: int = 0
    peak_bytes: int = 0
    descriptions: list[str] = field(default_factory=list)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class CheckpointStore:
    def __init__(self, folder: Path | None, fingerprint: Fingerprint | None = None, attempt: int | None = None,
                 observer: Observer | None = None):
        self.folder = Path(folder) if folder is not None else None
        self.observer = observer
        self.fingerprint = fingerprint
        self._units: dict[str, dict[str, Any]] = {}
        self.info = ResumeInfo(attempt=attempt or 1)
        self.step_interval_s = float(os.environ.get(INTERVAL_ENV, "60"))
        self._last_step_save: dict[str, float] = {}
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / UNITS_DIR).mkdir(exist_ok=True)
        journal = self._read_journal()
        if journal is not None:
            old = Fingerprint.model_validate(journal["fingerprint"])
            changed = old.differences(fingerprint) if fingerprint is not None else []
            if changed:
                self.info.fresh_reason = "the checkpoint is for a different job: " + "; ".join(changed)
                journal = None
            else:
                self._units = journal["units"]
                self.info.attempt = attempt or journal.get("attempt", 0) + 1
        if journal is None:
            self._units = {}
        dropped = self._drop_unlisted_files()
        self._write_journal()
        self._notify([JOURNAL], dropped)

    @property
    def enabled(self) -> bool:
        return self.folder is not None

    # ------------------------------------------------------------------ journal

    def _read_journal(self) -> dict[str, Any] | None:
        path = self.folder / JOURNAL  # type: ignore[operator]
        if not path.is_file():
            return None
        try:
            journal = json.loads(path.read_text())
        except json.JSONDecodeError:
            return None  # cannot happen with atomic writes; a hand-edited file starts fresh
        units = {k: v for k, v in journal.get("units", {}).items() if (self.folder / UNITS_DIR / v["file"]).is_file()}
        return {**journal, "units": units}

    def _write_journal(self) -> None:
        assert self.folder is not None
        body = {"fingerprint": self.fingerprint.model_dump(mode="json") if self.fingerprint else None,
                "attempt": self.info.attempt, "units": self._units}
        _atomic_write_text(self.folder / JOURNAL, json.dumps(body, indent=1, sort_keys=True))
        self.info.peak_bytes = max(self.info.peak_bytes, self.bytes_on_disk())

    def _drop_unlisted_files(self) -> list[str]:
        listed = {v["file"] for v in self._units.values()}
        dropped = []
        for path in (self.folder / UNITS_DIR).iterdir():  # type: ignore[operator]
            if path.name not in listed:
                path.unlink()
                dropped.append(f"{UNITS_DIR}/{path.name}")
        return dropped

    def _notify(self, written: list[str], removed: list[str]) -> None:
        if self.observer is not None and self.folder is not None:
            self.observer(self.folder, written, removed)

    def bytes_on_disk(self) -> int:
        return sum(v["bytes"] for v in self._units.values())

    # ------------------------------------------------------------------ units

    def load(self, key: str) -> Unit | None:
        """The unit `key` if a previous attempt finished it, counting it as reused."""
        if self.folder is None or key not in self._units:
            return None
        entry = self._units[key]
        tensors = load_file(self.folder / UNITS_DIR / entry["file"]) if entry["bytes"] else {}
        self.info.units_reused += 1
        self.info.seconds_saved += entry["seconds"]
        return Unit(tensors=tensors, meta=entry["meta"], seconds=entry["seconds"])

    def keys(self) -> list[str]:
        return sorted(self._units)

    def has(self, key: str) -> bool:
        return key in self._units

    def save(self, key: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any] | None = None,
             seconds: float = 0.0, replaces: str | None = None) -> None:
        """Record unit `key`; with `replaces`, units whose key starts with it are dropped afterwards."""
        if self.folder is None:
            return
        name = f"{time.time_ns():020d}.safetensors"  # ordered by time of writing: `latest` compares names
        path = self.folder / UNITS_DIR / name
        size = 0
        if tensors:
            tmp = path.with_name(f".{name}.tmp")
            save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp)
            os.replace(tmp, path)
            size = path.stat().st_size
        stale = [k for k in self._units if replaces is not None and k.startswith(replaces) and k != key]
        self._units[key] = {"file": name, "bytes": size, "meta": meta or {}, "seconds": seconds}
        self.info.bytes_written += size
        self._write_journal()
        self._notify(([f"{UNITS_DIR}/{name}"] if size else []) + [JOURNAL], [])
        removed = []
        for k in stale:
            removed.append(f"{UNITS_DIR}/{self._units.pop(k)['file']}")
            (self.folder / removed[-1]).unlink(missing_ok=True)
        if stale:
            self._write_journal()
            self._notify([JOURNAL], removed)
        failpoint.reached(key)

    def step_due(self, series: str, last: bool) -> bool:
        """Whether a training loop should save its state now: the last step always, else every `step_interval_s`."""
        if self.folder is None:
            return False
        now = time.monotonic()
        if last or now - self._last_step_save.setdefault(series, now) >= self.step_interval_s:
            self._last_step_save[series] = now
            return True
        return False

    def latest(self, prefix: str) -> tuple[str, Unit] | None:
        """The newest unit whose key starts with `prefix` (a step series keeps one)."""
        keys = [k for k in self._units if k.startswith(prefix)]
        if not keys:
            return None
        key = max(keys, key=lambda k: self._units[k]["file"])
        unit = self.load(key)
        return (key, unit) if unit is not None else None

    def resume_point(self, recipe_stages: list[str], num_layers: int) -> str | None:
        """Where a resumed job picks up, in words ("stage 2/2 quantize at layer 17 of 30"); None when nothing is reused."""
        keys = self.keys()
        if not keys:
            return None
        for index, name in enumerate(recipe_stages):
            if f"s{index}:done" in keys:
                continue
            layers = sum(k.startswith(f"s{index}:layer:") for k in keys)
            steps = [int(k.rsplit(":", 1)[1]) for k in keys if k.startswith(f"s{index}:step:")]
            # steps first: a stage that walks its layers before training end to end (OSTQuant's warm start) is past them
            at = f" after step {max(steps)}" if steps else f" at layer {layers + 1} of {num_layers}" if layers else ""
            return f"stage {index + 1}/{len(recipe_stages)} {name}{at}"
        evals = [k.split(":", 1)[1] for k in keys if k.startswith("eval:")]
        return "evaluation" + (f" (done: {', '.join(evals)})" if evals else "")

    def clear(self) -> None:
        """Delete every checkpoint (the job succeeded or was cancelled)."""
        if self.folder is None:
            return
        removed = [f"{UNITS_DIR}/{path.name}" for path in (self.folder / UNITS_DIR).iterdir()]
        for name in removed:
            (self.folder / name).unlink()
        (self.folder / UNITS_DIR).rmdir()
        (self.folder / JOURNAL).unlink(missing_ok=True)
        self._units = {}
        self._notify([], [*removed, JOURNAL])
        try:
            self.folder.rmdir()
        except OSError:
            pass  # the caller keeps other files there
