"""Expressiveness: the speaker's own expressions scaled up or calmed down, around their own neutral face.

The neutral face is estimated live from the tracked landmarks in the face's own frame (face units, upright):
every SAMPLE_S a shape goes into a window of the last WINDOW_S; the neutral is the per-coordinate median of the
window, which ignores speech (the mouth is mostly near rest) and expressions held for less than half the window.
It is used from the first frame (at first it is the face itself, so the effect grows in as the window fills), counts
as settled once SETTLE_S of samples are in, and then follows the window's median slowly (time constant ADAPT_S), so
a long-held expression bends it only gradually. A new person (the face gone longer than the tracker remembers one)
starts it again; `retake` makes the current shape the neutral now (the `n` key: "this is my neutral face").

The move at expressiveness X is (X - 1) x (current - neutral) on the landmarks where expressions show (brows, lids,
cheeks, nose, the lip corners), none elsewhere: the jaw and the lips' opening stay the speaker's. It is smoothed over
SMOOTH_S, about the tracker's own lag, so amplified motion is no jumpier than the tracking.
"""

from __future__ import annotations

import logging
import math
from collections import deque

import numpy as np

from livemood.face.align import to_face_units
from livemood.face.regions import CHEEKS, LIP_CORNERS

log = logging.getLogger(__name__)

SAMPLE_S = 0.2  # one shape into the window this often
WINDOW_S = 6.0  # the median runs over this much of the recent past
SETTLE_S = 3.0  # samples needed before the neutral counts as settled
ADAPT_S = 30.0  # after settling, the neutral follows the window's median with this time constant
FORGET_S = 2.0  # a face gone this long is a new person (the tracker's own re-acquisition window)
SMOOTH_S = 0.02  # time constant of the move's smoothing
OWN_GAIN = 2.0
UPPER_FACE_Y = 0.9  # face units below the eye line: landmarks above it (brows, lids, nose, upper cheeks) are moved
_MIRROR_CORNERS = (146, 91, 185, 40, 375, 321, 409, 270)  # lip points beside the corners, moved with them


def expressive_points(neutral: np.ndarray) -> np.ndarray:
    """(K,) landmark indices the expressiveness moves, from a neutral (478, 2) face-unit shape."""
    upper = np.flatnonzero(neutral[:468, 1] < UPPER_FACE_Y)
    return np.union1d(upper, np.array([*CHEEKS, *LIP_CORNERS, *_MIRROR_CORNERS]))


class NeutralFace:
    """The live estimate of one speaker's neutral face; see the module docstring."""

    def __init__(self) -> None:
        self._window: deque[np.ndarray] = deque(maxlen=round(WINDOW_S / SAMPLE_S))
        self._last_seen_ms: int | None = None
        self.reset()

    def reset(self) -> None:
        """Forget the estimate (a new person)."""
        self._window.clear()
        self.neutral: np.ndarray | None = None  # (478, 2) face units
        self.settled = False
        self._next_sample_ms: int | None = None
        self._points: np.ndarray | None = None  # the landmarks moved, from the neutral's layout
        self._move = np.zeros((478, 2))
        self._move_ms: int | None = None

    def retake(self, shape: np.ndarray) -> None:
        """This shape is the neutral face from now on (and the window starts from it)."""
        self._window.clear()
        self._window.extend([shape] * self._window.maxlen)  # type: ignore[arg-type]
        self.neutral = shape.copy()
        self._points = expressive_points(shape)
        self.settled = True
        log.info("neutral face taken now")

    def observe(self, landmarks: np.ndarray, t_ms: int) -> np.ndarray:
        """Take a frame's landmarks (478, 2, pixels); returns their face-unit shape (478, 2)."""
        shape = to_face_units(landmarks)
        if self._last_seen_ms is not None and t_ms - self._last_seen_ms > FORGET_S * 1e3:
            log.info("a new face: estimating its neutral face again")
            self.reset()
        self._last_seen_ms = t_ms
        if self._next_sample_ms is None or t_ms >= self._next_sample_ms:
            self._next_sample_ms = t_ms + round(SAMPLE_S * 1e3)
            self._window.append(shape)
            median = np.median(np.stack(self._window), axis=0)
            if not self.settled:
                self.neutral = median
                if len(self._window) * SAMPLE_S >= SETTLE_S:
                    self.settled = True
                    log.info("neutral face settled after %.1f s", len(self._window) * SAMPLE_S)
            else:
                assert self.neutral is not None
                self.neutral += (1.0 - math.exp(-SAMPLE_S / ADAPT_S)) * (median - self.neutral)
            self._points = expressive_points(self.neutral)
        return shape

    def move(self, shape: np.ndarray, scale: float, t_ms: int) -> np.ndarray:
        """(478, 2) face-unit move that makes `shape`'s expression `scale` + 1 times as large around the neutral
        (scale = expressiveness - 1), smoothed in time."""
        target = np.zeros((478, 2))
        if self.neutral is not None and self._points is not None:
            target[self._points] = OWN_GAIN * scale * (shape[self._points] - self.neutral[self._points])
        alpha = 1.0 if self._move_ms is None else 1.0 - math.exp(-max(0.0, t_ms - self._move_ms) / (SMOOTH_S * 1e3))
        self._move_ms = t_ms
        self._move += alpha * (target - self._move)
        return self._move
