"""The face path inside the pipeline: the tracker runs for engines that ask for it, on every frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from livemood.config import Controls
from livemood.controls import ControlState
from livemood.engines import IdentityEngine
from livemood.face.tracker import Face
from livemood.live.pipeline import Pipeline
from livemood.live.sinks import Sink
from livemood.live.sources import FileSource
from livemood.live.stats import StageTimes

from .conftest import read_frames


class Recorder(Sink):
    def __init__(self) -> None:
        self.images: list[np.ndarray] = []

    def send(self, image: np.ndarray, time_s: float) -> None:
        self.images.append(image)


class FaceSpy(IdentityEngine):
    """The identity engine, remembering which frames came with a face."""

    def __init__(self) -> None:
        self.faces: list[Face | None] = []

    def process(self, frame: np.ndarray, face: Face | None, audio: object, controls: Controls) -> np.ndarray:
        self.faces.append(face)
        return super().process(frame, face, audio, controls)


def test_identity_engine_through_the_pipeline_changes_nothing(media: Path) -> None:
    from livemood.face.tracker import FaceTracker

    clip = media / "talk_b.mp4"
    engine, sink = FaceSpy(), Recorder()
    pipeline = Pipeline(FileSource(clip), engine, [sink], ControlState(Controls()), StageTimes(), paced=False,
                        tracker=FaceTracker())
    result = pipeline.run()
    raw = read_frames(clip)
    assert result.frames == len(raw) == len(sink.images) and result.engine_errors == 0
    assert sum(f is not None for f in engine.faces) >= 0.98 * len(raw), "the tracker fed the engine"
    assert all(np.array_equal(a, b) for a, b in zip(sink.images, raw, strict=True)), "pasting an unchanged crop"
    assert "face" in pipeline.times.stages
