"""Frames as they travel through the pipeline: pixels plus their own time."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np


def now() -> float:
    """The pipeline's clock: monotonic seconds, shared by video and audio stamps."""
    return time.monotonic()


@dataclass(frozen=True, slots=True)
class Frame:
    """One video frame, stamped once at capture and never re-stamped.

    `image` is (H, W, 3) uint8 BGR. `t_capture` is `now()` when the frame was read from the camera or decoded from
    the file; latency is measured from it. `time_s` is the frame's position on the source's own timeline (a file's
    presentation time; for live sources the same clock as `t_capture`), which audio is aligned against.
    """

    image: np.ndarray
    t_capture: float
    time_s: float
