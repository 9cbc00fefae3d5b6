"""Engines turn a frame into the output frame. One interface; the pipeline guards every call."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from livemood.config import Controls


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
        self, frame: np.ndarray, face: object | None, audio: np.ndarray | None, controls: Controls
    ) -> np.ndarray: ...

    def close(self) -> None: ...


class PassthroughEngine:
    """Returns every frame unchanged: the baseline for measuring the pipeline itself."""

    name = "passthrough"
    needs_face = False
    needs_audio = False

    def process(
        self, frame: np.ndarray, face: object | None, audio: np.ndarray | None, controls: Controls
    ) -> np.ndarray:
        return frame

    def close(self) -> None:
        pass


def make_engine(name: str) -> Engine:
    """The engine called `name` (one of `config.ENGINES`)."""
    if name == "passthrough":
        return PassthroughEngine()
    raise ValueError(f"unknown engine {name!r}")
