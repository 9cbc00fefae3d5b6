"""Engines turn a frame into the output frame. One interface; the pipeline guards every call."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from livemood.config import DEFAULT_BACKEND, Controls
from livemood.face.align import WARP_CROP_SIZE, crop_transform, transform_points, warp_crop
from livemood.face.blend import face_mask, paste_back
from livemood.face.tracker import Face


class Engine(Protocol):
    """What every engine provides.

    `process` gets the (H, W, 3) uint8 BGR frame, the tracked face (None when no face is tracked or the engine
    does not ask for one), the (80, 16) mel window for the frame's time (None when the engine does not need audio),
    and this frame's controls; it returns the output frame, same shape and dtype. It may return its input.
    """

    name: str
    needs_face: bool
    needs_audio: bool

    def process(
        self, frame: np.ndarray, face: Face | None, audio: np.ndarray | None, controls: Controls
    ) -> np.ndarray: ...

    def close(self) -> None: ...


class PassthroughEngine:
    """Returns every frame unchanged: the baseline for measuring the pipeline itself."""

    name = "passthrough"
    needs_face = False
    needs_audio = False

    def process(
        self, frame: np.ndarray, face: Face | None, audio: np.ndarray | None, controls: Controls
    ) -> np.ndarray:
        return frame

    def close(self) -> None:
        pass


class IdentityEngine:
    """Aligns the face crop and pastes it back unchanged: measures and shows the face path's own cost and seams."""

    name = "identity"
    needs_face = True
    needs_audio = False

    def process(self, frame: np.ndarray, face: Face | None, audio: np.ndarray | None, controls: Controls
                ) -> np.ndarray:
        if face is None:
            return frame
        m = crop_transform(face, WARP_CROP_SIZE)
        crop = warp_crop(frame, m, WARP_CROP_SIZE)
        mask = face_mask(transform_points(m, face.landmarks), WARP_CROP_SIZE)
        # Detail-preserving mode, as the warp engine pastes: an unchanged crop leaves the frame exactly as it was.
        return paste_back(frame, crop, m, mask, presence=face.presence, source=crop)

    def close(self) -> None:
        pass


def make_engine(name: str, weights: Path | None = None, backend: str = DEFAULT_BACKEND) -> Engine:
    """The engine called `name` (one of `config.ENGINES`); the neural one runs `weights` on `backend`."""
    if name == "passthrough":
        return PassthroughEngine()
    if name == "identity":
        return IdentityEngine()
    if name == "warp":
        from livemood.engines.warp import WarpEngine

        return WarpEngine()
    if name == "neural":
        from livemood.backends import open_runner
        from livemood.engines.neural import NeuralEngine

        if weights is None:
            raise ValueError("the neural engine needs weights")
        return NeuralEngine(open_runner(weights, backend))
    raise ValueError(f"unknown engine {name!r}")
