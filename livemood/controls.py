"""The live controls: one shared, thread-safe holder that hotkeys write and the pipeline reads once per frame."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Mapping

import numpy as np

from livemood.config import RAMP_TIME_S, Controls

log = logging.getLogger(__name__)


class ControlState:
    """Holds the current `Controls`; every change is validated, logged on one line and told to the watchers.

    `owner` names what steers a run instead of the keys (keyframes, the tour): changes are then refused, logged.
    """

    def __init__(self, initial: Controls, owner: str | None = None) -> None:
        self._lock = threading.Lock()
        self._controls = initial
        # Replaced, never mutated, so update() can call them after releasing the lock.
        self._watchers: tuple[Callable[[Controls], None], ...] = ()
        self.owner = owner

    def get(self) -> Controls:
        with self._lock:
            return self._controls

    def update(self, **changes: object) -> Controls:
        """Replace some fields (e.g. `emotion="sad"`); raises UsageError for an invalid value."""
        return self.apply(lambda _: changes)

    def apply(self, change: Callable[[Controls], Mapping[str, object]]) -> Controls:
        """Replace the fields `change(current)` returns, atomically: keys on several threads may step the same
        field at once (e.g. intensity up), and each step must start from the other's result."""
        if self.owner is not None:
            log.info("%s set the controls in this run: key ignored", self.owner)
            return self.get()
        with self._lock:
            self._controls = dataclasses.replace(self._controls, **change(self._controls))
            controls = self._controls
            watchers = self._watchers
        log.info("emotion %s, intensity %.1f%s%s", controls.emotion, controls.intensity,
                 "" if controls.expressiveness == 1.0 else f", expressiveness {controls.expressiveness:.1f}",
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


class Ramp:
    """Moves a vector of weights toward a target at a bounded rate, so a switch never pops.

    Linear in time: a weight goes from 0 to `full_scale` in the controls' ramp time (`Controls.ramp_s`: the usual
    RAMP_TIME_S, or a keyframe's own; 0 jumps), so a change of emotion, intensity or bypass is over within it;
    switching emotion ramps the old weights down while the new ones come up. Time comes from the frames' stamps
    (milliseconds), so it holds for files too: the same frames give the same weights.
    """

    def __init__(self, size: int, full_scale: float = 1.0) -> None:
        self.full_scale = full_scale
        self.value = np.zeros(size)
        self._t_ms: int | None = None

    def step(self, target: np.ndarray, t_ms: int, ramp_s: float = RAMP_TIME_S) -> np.ndarray:
        """The weights at `t_ms`, moved toward `target` at the rate that `ramp_s` gives."""
        dt_s = 0.0 if self._t_ms is None else max(0.0, (t_ms - self._t_ms) / 1e3)
        self._t_ms = t_ms
        if ramp_s <= 0.0:
            self.value[:] = target
        else:
            rate = self.full_scale / ramp_s  # weight per second
            self.value += np.clip(target - self.value, -rate * dt_s, rate * dt_s)
        return self.value
