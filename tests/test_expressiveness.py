"""Expressiveness on a real talking clip: 1 is the passthrough, above 1 the speaker's own expressions grow, below
they calm down, the lips' opening stays the speaker's; the neutral face settles, is retaken on `n`, and starts
again for a new person; the keys step it; evaluate measures it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from livemood.config import Controls
from livemood.controls import ControlState
from livemood.engines.expressiveness import SETTLE_S, NeutralFace
from livemood.engines.warp import WarpEngine
from livemood.evaluation.metrics import expression_motion, lip_opening
from livemood.face.align import to_face_units
from livemood.face.tracker import Face, FaceTracker
from livemood.live.keys import apply_key

from .conftest import read_frames


@pytest.fixture(scope="module")
def clip(media: Path) -> tuple[list[np.ndarray], list[Face]]:
    frames = read_frames(media / "talk_e.mp4", 150)  # 6 s of a speaker who moves her brows a lot
    with FaceTracker() as tracker:
        faces = [tracker.track(f, i * 40) for i, f in enumerate(frames)]
    assert all(f is not None for f in faces)
    return frames, faces


def render(clip: tuple[list[np.ndarray], list[Face]], controls: Controls) -> list[np.ndarray]:
    engine = WarpEngine()
    return [engine.process(f, face, None, controls) for f, face in zip(*clip, strict=True)]


def test_expressiveness_one_without_an_emotion_is_the_passthrough(clip: tuple[list[np.ndarray], list[Face]]) -> None:
    out = render(clip, Controls(expressiveness=1.0))
    assert all(o is f for o, f in zip(out, clip[0], strict=True)), "the frames themselves, untouched"


def test_it_scales_the_speakers_own_motion_and_keeps_the_opening(clip: tuple[list[np.ndarray], list[Face]]) -> None:
    faces = clip[1]
    motion_in = float(np.sqrt(np.mean(expression_motion(np.array([to_face_units(f.landmarks) for f in faces]))**2)))
    lips_in = [lip_opening(f.landmarks) for f in faces]
    ratios = {}
    for x in (0.5, 1.5):
        with FaceTracker() as tracker:
            out_faces = [tracker.track(o, i * 40) for i, o in enumerate(render(clip, Controls(expressiveness=x)))]
        shapes = np.array([to_face_units(f.landmarks) for f in out_faces])
        ratios[x] = float(np.sqrt(np.mean(expression_motion(shapes) ** 2))) / motion_in
        assert np.corrcoef(lips_in, [lip_opening(f.landmarks) for f in out_faces])[0, 1] >= 0.95
    assert ratios[0.5] < 0.8 and ratios[1.5] > 1.3, ratios


def test_neutral_face_settles_is_retaken_and_restarts_for_a_new_person(
        clip: tuple[list[np.ndarray], list[Face]], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    _, faces = clip
    neutral = NeutralFace()
    for face in faces[: round(SETTLE_S * 25) + 5]:
        neutral.observe(face.landmarks, face.timestamp_ms)
    assert neutral.settled and "neutral face settled" in caplog.text
    shape = to_face_units(faces[100].landmarks)
    neutral.retake(shape)
    assert np.array_equal(neutral.neutral, shape)
    assert np.abs(neutral.move(shape, 0.5, faces[100].timestamp_ms)).max() == 0, "at the neutral face: no move"
    neutral.observe(faces[0].landmarks, faces[100].timestamp_ms + 5000)  # gone 5 s: someone else
    assert not neutral.settled and "new face" in caplog.text


def test_keys_step_expressiveness_and_retake_the_neutral_face() -> None:
    state = ControlState(Controls())
    for _ in range(12):
        apply_key(state, "]")
    assert state.get().expressiveness == 2.0, "stops at the top"
    for _ in range(5):
        apply_key(state, "[")
    assert state.get().expressiveness == 1.5
    apply_key(state, "n")
    apply_key(state, "n")
    assert state.get().neutral_takes == 2
