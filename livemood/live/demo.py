"""The embedded default source: a real portrait (scikit-image's astronaut) with gentle head motion and a talking mouth.

It needs no camera and no download, so `make demo` shows the filter on a fresh machine.
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
MOUTH_CENTRE = (223.0, 146.0)  # midpoint between the inner lips
MOUTH_WIDTH = 43.0  # corner to corner
LIP_LINE_Y = 143.0  # inner upper lip: rows above it never move with the jaw
CHIN_Y = 177.0

# Motion, in source pixels and degrees.
HEAD_SHIFT = (5.0, 3.0)
HEAD_TILT_DEG = 3.0
MOUTH_OPEN_MAX = 7.0  # jaw drop at a fully open syllable
SYLLABLE_HZ = 3.5  # syllables per second while "speaking"
PHRASE_S, PAUSE_S = 2.2, 0.6  # speaking then silent, repeated


def portrait() -> np.ndarray:
    """The astronaut photograph as (512, 512, 3) uint8 BGR."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[:, :, ::-1])


def mouth_opening(t: float) -> float:
    """Jaw drop in source pixels at time t (s): syllables inside phrases, closed during pauses."""
    phase = t % (PHRASE_S + PAUSE_S)
    if phase > PHRASE_S:
        return 0.0
    envelope = math.sin(math.pi * phase / PHRASE_S) ** 0.5
    return MOUTH_OPEN_MAX * envelope * max(0.0, math.sin(2 * math.pi * SYLLABLE_HZ * t)) ** 0.8


class Portrait:
    """Renders frame t of the animation; the jaw field is built once, each frame costs two small warps."""

    def __init__(self, size: tuple[int, int] = DEMO_SIZE) -> None:
        self.size = size
        self.image = portrait()
        # The jaw region: a window around the mouth that is moved down as a whole (source pixels).
        x0, x1 = int(MOUTH_CENTRE[0] - MOUTH_WIDTH), int(MOUTH_CENTRE[0] + MOUTH_WIDTH)
        y0, y1 = int(LIP_LINE_Y - 4), int(CHIN_Y + 30)
        self.roi = (x0, y0, x1, y1)
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        across = np.exp(-(((xs - MOUTH_CENTRE[0]) / (0.75 * MOUTH_WIDTH)) ** 2))
        # 0 above the lip line, 1 from the lower lip to the chin, fading to 0 below the chin.
        down = np.clip((ys - LIP_LINE_Y) / 3.0, 0, 1) * np.clip((y1 - ys) / (y1 - CHIN_Y), 0, 1)
        self.jaw_weight = across * down
        self.grid = (xs, ys)
        dy, dx = (ys - MOUTH_CENTRE[1]), (xs - MOUTH_CENTRE[0]) / (0.36 * MOUTH_WIDTH)
        self.cavity_shape = (dx, dy)

    def render(self, t: float) -> np.ndarray:
        """(H, W, 3) uint8 BGR frame at time t seconds."""
        src = self.image.copy()
        opening = mouth_opening(t)
        if opening > 0.2:
            x0, y0, x1, y1 = self.roi
            xs, ys = self.grid
            jaw = cv2.remap(self.image, xs, ys - opening * self.jaw_weight, cv2.INTER_LINEAR)
            # The mouth interior shows between the lips as they part: a soft dark ellipse.
            dx, dy = self.cavity_shape
            half = opening / 2 + 0.5
            inside = np.clip(1.5 - np.hypot(dx, (dy - opening / 2) / half), 0, 1)[..., None]
            cavity = np.array([30, 25, 60], np.float32)  # dark red-brown, BGR
            src[y0:y1, x0:x1] = (jaw * (1 - inside) + cavity * inside).astype(np.uint8)
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
