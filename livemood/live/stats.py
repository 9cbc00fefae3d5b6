"""Per-stage timers that are always on: they feed `livemood bench` and the live status line."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from livemood.frames import now


def percentile_ms(values_s: list[float], q: float) -> float:
    """The q-th percentile of durations given in seconds, in milliseconds (0 for no samples)."""
    return float(np.percentile(values_s, q) * 1e3) if values_s else 0.0


class StageTimes:
    """Durations per named stage and end-to-end latencies, in seconds; safe to add to from several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.stages: dict[str, list[float]] = defaultdict(list)
        self.latencies: list[float] = []

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.stages[stage].append(seconds)

    @contextmanager
    def time(self, stage: str) -> Iterator[None]:
        t0 = now()
        try:
            yield
        finally:
            self.add(stage, now() - t0)

    def add_latency(self, seconds: float) -> None:
        with self._lock:
            self.latencies.append(seconds)

    def take(self) -> StageTimes:
        """Move everything gathered so far into a new object (for per-second reports) and start afresh."""
        taken = StageTimes()
        with self._lock:
            taken.stages, self.stages = self.stages, defaultdict(list)
            taken.latencies, self.latencies = self.latencies, []
        return taken

    def stage_p50_ms(self) -> dict[str, float]:
        return {name: round(percentile_ms(values, 50), 3) for name, values in sorted(self.stages.items())}

    def latency_ms(self) -> dict[str, float]:
        return {
            "p50": round(percentile_ms(self.latencies, 50), 3),
            "p95": round(percentile_ms(self.latencies, 95), 3),
            "max": round(max(self.latencies, default=0.0) * 1e3, 3),
        }
