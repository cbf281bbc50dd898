"""Progress events for a person at a terminal: one rich progress bar per stage, or plain lines.

On a terminal each stage gets a bar with its layer or step, the rate and the time left; the
lines before and after a stage (its start, metrics, its end) print above the bars. Where the
output is not a terminal (a log file, CI, a pipe) the same facts go out as plain lines, a
few per stage, so logs stay short and readable.
"""

from __future__ import annotations

import datetime

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from compressor.progress import JobProgress, ProgressEvent, ProgressTracker

PLAIN_LAYER_EVERY = 5  # plain output: every 5th layer, and the last


def format_eta(seconds: float | None) -> str:
    return "-:--:--" if seconds is None else str(datetime.timedelta(seconds=round(seconds)))


class ProgressDisplay:
    """A progress hook for `compressor.run` that draws what the events say; use it as a context manager."""

    def __init__(self, console: Console, verbose: bool = False):
        self.console = console
        self.verbose = verbose
        self.tracker = ProgressTracker()
        self._bars: Progress | None = None
        self._task: TaskID | None = None
        if console.is_terminal:
            self._bars = Progress(
                TextColumn("[bold]{task.description:<14}"), BarColumn(), TextColumn("{task.fields[position]}"),
                TextColumn("[cyan]{task.fields[rate]}"), TextColumn("ETA {task.fields[eta]}"),
                console=console,
            )

    def __enter__(self) -> ProgressDisplay:
        if self._bars is not None:
            self._bars.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._bars is not None:
            self._bars.stop()

    def __call__(self, event: ProgressEvent) -> None:
        progress = self.tracker.update(event)
        if event.kind in ("layer", "step"):
            self._advance(event, progress)
        elif event.kind == "stage_start":
            self._end_bar()
            self.console.print(f"[bold]{event.stage or ''}[/] {event.message}")
        else:
            if event.kind == "stage_end":
                self._end_bar()
            self.console.print(f"[bold]{event.stage or ''}[/] {event.message}")

    def _rate(self, event: ProgressEvent) -> str:
        elapsed = self.tracker.elapsed(event)
        if elapsed <= 0:
            return ""
        if event.layer is not None:
            return f"{(event.layer + 1) / elapsed:.2f} layer/s"
        if isinstance(event.data.get("step"), int):
            return f"{event.data['step'] / elapsed:.2f} step/s"
        return f"{100 * (event.fraction or 0) / elapsed:.1f} %/s"

    @staticmethod
    def _position(event: ProgressEvent) -> str:
        if event.layer is not None and event.num_layers:
            return f"layer {event.layer + 1}/{event.num_layers}"
        return event.message

    def _advance(self, event: ProgressEvent, progress: JobProgress) -> None:
        done = event.fraction == 1.0
        position, rate, eta = self._position(event), self._rate(event), format_eta(0.0 if done else progress.eta_s)
        if self._bars is not None:
            if event.fraction is None:  # an event without a fraction (e.g. an epoch inside a layer): text only
                if self._task is not None:
                    self._bars.update(self._task, position=position)
                return
            if self._task is None:
                self._task = self._bars.add_task(event.stage or "", total=1.0, position="", rate="", eta="")
            self._bars.update(self._task, completed=event.fraction, position=position, rate=rate, eta=eta)
            return
        if not self._plain_line_due(event):
            return
        self.console.print(f"  {event.stage or ''} {position}  {rate}  ETA {eta}".rstrip(), highlight=False)

    def _plain_line_due(self, event: ProgressEvent) -> bool:
        if event.kind == "layer":
            last = event.num_layers is not None and event.layer is not None and event.layer + 1 == event.num_layers
            return last or (event.layer is not None and (event.layer + 1) % PLAIN_LAYER_EVERY == 0) or self.verbose
        return self.verbose or event.fraction in (None, 1.0)

    def _end_bar(self) -> None:
        if self._bars is not None and self._task is not None:
            self._bars.update(self._task, completed=1.0, eta=format_eta(0))
            self._task = None
