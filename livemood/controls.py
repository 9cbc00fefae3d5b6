"""The live controls: one shared, thread-safe holder that hotkeys write and the pipeline reads once per frame."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Mapping

import numpy as np

from livemood.config import Controls

log = logging.getLogger(__name__)


class ControlState:
    """Holds the current `Controls`; every change is validated, logged on one line and told to the watchers."""

    def __init__(self, initial: Controls) -> None:
        self._lock = threading.Lock()
        self._controls = initial
        # Replaced, never mutated, so update() can call them after releasing the lock.
        self._watchers: tuple[Callable[[Controls], None], ...] = ()

    def get(self) -> Controls:
        with self._lock:
            return self._controls

    def update(self, **changes: object) -> Controls:
        """Replace some fields (e.g. `emotion="sad"`); raises UsageError for an invalid value."""
        return self.apply(lambda _: changes)

    def apply(self, change: Callable[[Controls], Mapping[str, object]]) -> Controls:
        """Replace the fields `change(current)` returns, atomically: keys on several threads may step the same
        field at once (e.g. intensity up), and each step must start from the other's result."""
        with self._lock:
            self._controls = dataclasses.replace(self._controls, **change(self._controls))
            controls = self._controls
            watchers = self._watchers
        log.info("emotion %s, intensity %.1f%s", controls.emotion, controls.intensity,
                 " (bypass)" if controls.bypass else "")
        for callback in watchers:
            # A broken watcher (e.g. the control panel) must not take a hotkey's change back or stop the others.
            try:
                callback(controls)
            except Exception:
                log.exception("a controls watcher failed")
        return controls

    def watch(self, callback: Callable[[Controls], None]) -> Callable[[], None]:
        """Call `callback(controls)` after every update; returns a function that stops it (safe to call twice).

        The callback runs on the updating thread, outside the lock, so it may call `get` but should return quickly.
        Two threads updating at once may report in either order: a watcher that needs the latest value reads `get`.
        """
        with self._lock:
            self._watchers = (*self._watchers, callback)

        def unwatch() -> None:
            with self._lock:
                kept = list(self._watchers)
                for i, known in enumerate(kept):
                    if known is callback:
                        del kept[i]
                        break
                self._watchers = tuple(kept)

        return unwatch


RAMP_TIME_S = 0.2  # switching emotion, intensity or bypass takes at most this long


class Ramp:
    """Moves a vector of weights toward a target at a bounded rate, so a switch never pops.

    Linear in time: a weight goes from 0 to `full_scale` in `time_s`; switching emotion ramps the old weights down
    while the new ones come up. Time comes from the frames' stamps (milliseconds), so it holds for files too.
    """

    def __init__(self, size: int, full_scale: float = 1.0, time_s: float = RAMP_TIME_S) -> None:
        self.rate = full_scale / time_s  # weight per second
        self.value = np.zeros(size)
        self._t_ms: int | None = None

    def step(self, target: np.ndarray, t_ms: int) -> np.ndarray:
        dt_s = 0.0 if self._t_ms is None else max(0.0, (t_ms - self._t_ms) / 1e3)
        self._t_ms = t_ms
        self.value += np.clip(target - self.value, -self.rate * dt_s, self.rate * dt_s)
        return self.value
