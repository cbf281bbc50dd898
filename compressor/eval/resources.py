"""Wall time and peak resident memory per pipeline stage.

A sampler thread polls RSS every 50 ms while a stage runs, so each stage gets its own peak
(ru_maxrss would only give the process-wide peak so far).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import psutil


@dataclass
class StageCost:
    seconds: float = 0.0
    peak_rss_mb: float = 0.0


@dataclass
class CostMeter:
    stages: dict[str, StageCost] = field(default_factory=dict)

    @contextmanager
    def measure(self, name: str, interval: float = 0.05) -> Iterator[StageCost]:
        proc = psutil.Process()
        cost = StageCost(peak_rss_mb=proc.memory_info().rss / 2**20)
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(interval):
                cost.peak_rss_mb = max(cost.peak_rss_mb, proc.memory_info().rss / 2**20)

        thread = threading.Thread(target=sample, daemon=True)
        start = time.perf_counter()
        thread.start()
        try:
            yield cost
        finally:
            stop.set()
            thread.join()
            cost.seconds = time.perf_counter() - start
            cost.peak_rss_mb = max(cost.peak_rss_mb, proc.memory_info().rss / 2**20)
            self.stages[name] = cost

    @property
    def total_seconds(self) -> float:
        return sum(c.seconds for c in self.stages.values())

    @property
    def peak_rss_mb(self) -> float:
        return max((c.peak_rss_mb for c in self.stages.values()), default=0.0)
