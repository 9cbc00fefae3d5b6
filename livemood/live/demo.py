"""The embedded default source: a real portrait (scikit-image's astronaut) with gentle head motion and blinks.

It needs no camera and no download, so `make demo` shows the filter on a fresh machine. The mouth stays the photo's
own (a relaxed, closed smile): a synthetic talking mouth on a still photo reads as a smear, not as speech, and the
emotions are what the eye should judge here.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import cv2
import numpy as np

from livemood.live.handoff import DropPolicy
from livemood.live.sources import Source
from livemood.live.stats import StageTimes

DEMO_FPS = 25.0
DEMO_SECONDS = 12.0  # length of a finite demo (file output): 1.5 s for each of the 8 emotions
DEMO_SIZE = (512, 512)  # (width, height) of the output frames

# Portrait geometry in the 512x512 source photo, measured once with mediapipe face mesh (pixels).
CROP = (32.0, 0.0, 384.0)  # (x0, y0, side) of the square around the face that fills the output
FACE_CENTRE = (224.0, 125.0)  # head rotation pivot
# Each eye: outer and inner corner x, upper and lower lid y (landmarks 33/133/159/145 and 263/362/386/374).
EYES = ((195.0, 213.0, 97.8, 104.4), (237.0, 256.0, 100.0, 106.5))
LID_SKIN = 6.0  # pixels of lid skin above the upper lid that slide down with it

# Motion, in source pixels, degrees and seconds.
HEAD_SHIFT = (5.0, 3.0)
HEAD_TILT_DEG = 3.0
BLINK_S = 0.16  # a blink closes and opens again in this long
BLINK_EVERY_S = (3.1, 2.3, 4.2, 1.2, 3.6)  # the gaps between blinks, repeated: people blink irregularly


def portrait() -> np.ndarray:
    """The astronaut photograph as (512, 512, 3) uint8 BGR."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[:, :, ::-1])


def lid_closure(t: float) -> float:
    """How far the eyes are closed at time t (s): 0 open, 1 shut, in brief irregular blinks."""
    period = sum(BLINK_EVERY_S)
    phase, start = t % period, 0.0
    for gap in BLINK_EVERY_S:
        start += gap
        if start - BLINK_S <= phase < start:
            return math.sin(math.pi * (phase - start + BLINK_S) / BLINK_S)
    return 0.0


class Portrait:
    """Renders frame t of the animation: the eyelids' warp is built once, each frame costs two small warps."""

    def __init__(self, size: tuple[int, int] = DEMO_SIZE) -> None:
        self.size = size
        self.image = portrait()
        x0 = int(min(e[0] for e in EYES) - 4)
        x1 = int(max(e[1] for e in EYES) + 4)
        y0 = int(min(e[2] for e in EYES) - LID_SKIN - 2)
        y1 = int(max(e[3] for e in EYES) + 4)
        self.roi = (x0, y0, x1, y1)
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        self.grid = (xs, ys)
        # Per pixel, how far (pixels) the lid moves it down at a full blink: the eye's opening from the upper lid's
        # skin to the lower lid, rising over the skin above and falling to 0 just below the lower lid, where the
        # eye's own pixels are pressed into a line.
        self.opening = np.zeros_like(xs)
        for outer, inner, upper, lower in EYES:
            left, right = min(outer, inner), max(outer, inner)
            across = np.clip(1.0 - (2.0 * (xs - 0.5 * (left + right)) / (right - left + 6.0)) ** 4, 0.0, 1.0)
            down = np.clip((ys - (upper - LID_SKIN)) / LID_SKIN, 0.0, 1.0) * np.clip((lower + 2.0 - ys) / 2.0, 0.0,
                                                                                      1.0)
            self.opening = np.maximum(self.opening, across * down * (lower - upper))

    def render(self, t: float) -> np.ndarray:
        """(H, W, 3) uint8 BGR frame at time t seconds."""
        src = self.image
        closure = lid_closure(t)
        if closure > 0.0:
            src = self.image.copy()
            x0, y0, x1, y1 = self.roi
            xs, ys = self.grid
            src[y0:y1, x0:x1] = cv2.remap(self.image, xs, ys - closure * self.opening, cv2.INTER_LINEAR)
        return cv2.warpAffine(src, self._head_matrix(t), self.size, flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REFLECT)

    def _head_matrix(self, t: float) -> np.ndarray:
        """Source → output affine: a slow sway and tilt about the face, then the crop scaled to the output."""
        angle = HEAD_TILT_DEG * math.sin(2 * math.pi * 0.21 * t)
        rot = cv2.getRotationMatrix2D(FACE_CENTRE, angle, 1.0 + 0.015 * math.sin(2 * math.pi * 0.13 * t))
        rot[0, 2] += HEAD_SHIFT[0] * math.sin(2 * math.pi * 0.17 * t)
        rot[1, 2] += HEAD_SHIFT[1] * math.sin(2 * math.pi * 0.29 * t + 1.0)
        x0, y0, side = CROP
        crop = np.array([[self.size[0] / side, 0, -x0 * self.size[0] / side],
                         [0, self.size[1] / side, -y0 * self.size[1] / side]])
        return crop @ np.vstack([rot, [0, 0, 1]])


class DemoSource(Source):
    """The animated portrait as a source: every frame kept, `seconds` long (None = until stopped)."""

    live = False

    def __init__(
        self,
        size: tuple[int, int] | None = None,
        seconds: float | None = DEMO_SECONDS,
        fps: float = DEMO_FPS,
        times: StageTimes | None = None,
    ) -> None:
        super().__init__(DropPolicy.BLOCK, 2, times, "render")
        self._portrait = Portrait(size or DEMO_SIZE)
        self.size = self._portrait.size
        self.fps = fps
        self.frame_count = None if seconds is None else round(seconds * fps)

    def _images(self) -> Iterator[tuple[np.ndarray, float]]:
        index = 0
        while self.frame_count is None or index < self.frame_count:
            t = index / self.fps
            yield self._portrait.render(t), t
            index += 1
