"""Progress events and cancellation: the one channel from the library to its callers.

The CLI prints these events, the workers write them to the jobs database (throttled), and
tests collect them. `should_cancel` is polled between layers and steps; when it answers
True the pipeline raises `JobCancelled` at the next safe point.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

EventKind = Literal["stage_start", "stage_end", "layer", "step", "message", "metric"]


@dataclass
class ProgressEvent:
    kind: EventKind
    message: str
    stage: str | None = None
    layer: int | None = None
    num_layers: int | None = None
    fraction: float | None = None  # of the current stage, 0..1
    data: dict[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


ProgressHook = Callable[[ProgressEvent], None]
CancelCheck = Callable[[], bool]


class JobCancelled(Exception):
    """Raised inside the pipeline when the caller asked to cancel."""


class Progress:
    """Wraps the caller's hook and cancel check; every method is safe to call with neither set."""

    def __init__(self, hook: ProgressHook | None = None, should_cancel: CancelCheck | None = None):
        self._hook = hook
        self._should_cancel = should_cancel
        self.stage: str | None = None

    def emit(self, kind: EventKind, message: str, **kw: Any) -> None:
        if self._hook is not None:
            self._hook(ProgressEvent(kind=kind, message=message, stage=kw.pop("stage", self.stage), **kw))

    def layer(self, index: int, num_layers: int, message: str = "", **data: Any) -> None:
        """Report layer `index` (0-based) done, then honour a pending cancel."""
        self.emit(
            "layer", message or f"layer {index + 1}/{num_layers}", layer=index, num_layers=num_layers,
            fraction=(index + 1) / num_layers, data=data,
        )
        self.check_cancel()

    def check_cancel(self) -> None:
        if self._should_cancel is not None and self._should_cancel():
            raise JobCancelled(f"cancelled during stage {self.stage}")


@dataclass(frozen=True)
class JobProgress:
    """Where a job stands: stage, layer, fraction of the stage done, seconds left, last message.

    `to_dict()` has the keys of the jobs table's `progress` column (what the service shows as
    a job's `progress`), so the worker and the CLI read one record instead of each its own dict.
    """

    stage: str | None
    layer: int | None = None
    num_layers: int | None = None
    fraction: float | None = None
    eta_s: float | None = None
    message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ProgressTracker:
    """Turns events into `JobProgress`: each stage is timed from its first event, the rest extrapolated linearly."""

    def __init__(self) -> None:
        self.stage: str | None = None
        self.stage_started = time.time()

    def update(self, event: ProgressEvent) -> JobProgress:
        if event.stage and event.stage != self.stage:
            self.stage, self.stage_started = event.stage, event.time
        fraction = event.fraction
        eta = None
        if fraction and 0 < fraction < 1:
            eta = (event.time - self.stage_started) * (1 - fraction) / fraction
        return JobProgress(stage=self.stage, layer=event.layer, num_layers=event.num_layers, fraction=fraction,
                           eta_s=eta, message=event.message)

    def elapsed(self, event: ProgressEvent) -> float:
        """Seconds since the current stage's first event."""
        return max(event.time - self.stage_started, 0.0)
