"""The live controls: one shared, thread-safe holder that hotkeys write and the pipeline reads once per frame."""

from __future__ import annotations

import dataclasses
import logging
import threading

from livemood.config import Controls

log = logging.getLogger(__name__)


class ControlState:
    """Holds the current `Controls`; every change is validated and logged on one line."""

    def __init__(self, initial: Controls) -> None:
        self._lock = threading.Lock()
        self._controls = initial

    def get(self) -> Controls:
        with self._lock:
            return self._controls

    def update(self, **changes: object) -> Controls:
        """Replace some fields (e.g. `emotion="sad"`); raises UsageError for an invalid value."""
        with self._lock:
            self._controls = dataclasses.replace(self._controls, **changes)
            controls = self._controls
        log.info("emotion %s, intensity %.1f%s", controls.emotion, controls.intensity,
                 " (bypass)" if controls.bypass else "")
        return controls
