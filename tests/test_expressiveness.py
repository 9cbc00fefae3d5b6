"""Expressiveness on a real talking clip: 1 is the passthrough, above 1 the speaker's own expressions grow, below
they calm down, the lips' opening stays the speaker's; the neutral face settles, is retaken on `n`, and starts
again for a new person; the keys step it; evaluate measures it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from livemood.config import Controls
from livemood.controls import ControlState
from livemood.engines.expressiveness import CORNERS, SETTLE_S, TRANSFER, Layout, NeutralFace, eyes_open
from livemood.engines.warp import WarpEngine
from livemood.evaluation.metrics import expression_motion, expression_ratio, lip_opening
from livemood.face.align import onto_skull, skull_units, to_face_units
from livemood.face.regions import BROWS
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


def render(clip: tuple[list[np.ndarray], list[Face]], controls: Controls, look_ahead: bool = False
           ) -> list[np.ndarray]:
    engine = WarpEngine()
    if look_ahead:  # as a file run does
        engine.neutral.look_ahead((f, i * 0.04) for i, f in enumerate(clip[0]))
    return [engine.process(f, face, None, controls) for f, face in zip(*clip, strict=True)]


def test_expressiveness_one_without_an_emotion_is_the_passthrough(clip: tuple[list[np.ndarray], list[Face]]) -> None:
    out = render(clip, Controls(expressiveness=1.0))
    assert all(o is f for o, f in zip(out, clip[0], strict=True)), "the frames themselves, untouched"


def test_it_scales_the_speakers_own_motion_and_keeps_the_opening(clip: tuple[list[np.ndarray], list[Face]]) -> None:
    faces = clip[1]

    def pose_free(tracked: list[Face]) -> np.ndarray:  # the expression's motion, the head's pose taken out
        return expression_motion(skull_units(np.array([f.points for f in tracked]), faces[0].points))

    lips_in = [lip_opening(f.landmarks) for f in faces]
    ratios = {}
    for x in (0.5, 1.5):
        with FaceTracker() as tracker:
            out = render(clip, Controls(expressiveness=x), look_ahead=True)
            out_faces = [tracker.track(o, i * 40) for i, o in enumerate(out)]
        ratios[x] = expression_ratio(pose_free(faces), pose_free(out_faces))
        assert np.corrcoef(lips_in, [lip_opening(f.landmarks) for f in out_faces])[0, 1] >= 0.95
    assert 0.35 <= ratios[0.5] <= 0.65 and 1.35 <= ratios[1.5] <= 1.65, ratios


def test_the_lips_and_the_skin_around_them_move_with_the_corners(clip: tuple[list[np.ndarray], list[Face]]) -> None:
    neutral = np.median([to_face_units(f.landmarks) for f in clip[1]], axis=0)
    layout = Layout.of(neutral, {region: 1.0 for region in TRANSFER})
    deviation = np.zeros((478, 2))
    deviation[[*CORNERS[0], *CORNERS[1]], 1] = -0.1  # both corners up: a smile
    move = layout.move(deviation)[:, 1]
    assert move[61] == move[291] == -0.1
    assert abs(move[0]) < 0.02 and abs(move[17]) < 0.02, "the lips' middle stays"
    assert move[40] <= move[37] < 0 and move[37] > -0.1, "lip points bend with their corner, less towards the middle"
    assert -0.1 < move[57] < -0.02, "the skin beside the corner goes along"
    assert abs(move[152]) < 1e-3 and not move[list(BROWS)].any(), "the chin and the brows stay"
    gains = Layout.of(neutral).gain
    assert gains[61] == 1 / TRANSFER["mouth"] and gains[105] == 1 / TRANSFER["brows"]


def test_a_file_run_settles_the_neutral_before_its_first_frame(
        clip: tuple[list[np.ndarray], list[Face]], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    neutral = NeutralFace()
    neutral.look_ahead((f, i * 0.04) for i, f in enumerate(clip[0]))
    assert neutral.settled and "neutral face settled from the first 6.0 s" in caplog.text
    sampled = [f.points for f in clip[1][::5]]  # SAMPLE_S apart
    aligned = [sampled[0]] + [onto_skull(p, sampled[0])[0] for p in sampled[1:]]
    assert np.abs(neutral.neutral - np.median(aligned, axis=0)).max() < 0.5, "pixels"


def test_neutral_face_settles_is_retaken_and_restarts_for_a_new_person(
        clip: tuple[list[np.ndarray], list[Face]], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    _, faces = clip
    neutral = NeutralFace()
    for face in faces[: round(SETTLE_S * 25) + 5]:
        neutral.observe(face.points, face.timestamp_ms)
    assert neutral.settled and "neutral face settled" in caplog.text
    aligned = onto_skull(faces[100].points, neutral.neutral)[0]
    neutral.retake(faces[100].points)
    assert np.array_equal(neutral.neutral, aligned)
    # No move at the neutral face (to rounding: the face is aligned onto the neutral again, 2e-15 face units).
    assert np.abs(neutral.move(faces[100].points, 0.5, faces[100].timestamp_ms)).max() < 1e-12
    neutral.observe(faces[0].points, faces[100].timestamp_ms + 5000)  # gone 5 s: someone else
    assert not neutral.settled and "new face" in caplog.text


def test_a_nod_or_a_turn_is_not_an_expression(clip: tuple[list[np.ndarray], list[Face]]) -> None:
    points = clip[1][100].points
    neutral = NeutralFace()
    neutral.retake(points)
    for pitch, yaw in ((12.0, 0.0), (0.0, 20.0), (-8.0, -15.0)):
        a, b = np.radians(pitch), np.radians(yaw)
        rot = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]]) @ np.array(
            [[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
        centre = points.mean(axis=0)
        turned = (points - centre) @ rot.T + centre  # the same face, the head turned
        assert np.abs(to_face_units(turned[:, :2]) - to_face_units(points[:, :2])).max() > 0.02, "face units move"
        assert np.abs(neutral.move(turned, 0.5, 40)).max() < 1e-6, (pitch, yaw)


def test_a_closed_eye_is_not_stretched_open(clip: tuple[list[np.ndarray], list[Face]]) -> None:
    faces = clip[1]
    neutral = NeutralFace()
    neutral.retake(faces[100].points)  # eyes open
    gaps = np.array([eyes_open(onto_skull(f.points, neutral.neutral)[0], neutral.neutral) for f in faces])  # (F, 2)
    assert gaps[100].min() == 1.0 and gaps.min() < 0.1, "the clip's blinks are seen as blinks, frame 100 open"
    shut = neutral.neutral.copy()
    shut[159] = shut[145]  # the right eye closed
    shut[list(BROWS), 1] -= 3.0  # and the brows raised, 3 pixels
    eye = Layout.of(to_face_units(neutral.neutral[:, :2])).eyes[0]
    assert 159 in eye and 105 not in eye
    # Far apart in time, so the move's smoothing has settled on each.
    moves = {x: neutral.move(shut, x - 1.0, k * 10_000).copy() for k, x in enumerate((0.0, 0.5))}
    assert np.abs(moves[0.5][eye]).max() > 0, "calmed as at 0.5 ..."
    assert np.allclose(moves[0.0][eye], moves[0.5][eye]), "... and no further: the closed lid is not stretched open"
    assert np.allclose(moves[0.0][list(BROWS)], 2 * moves[0.5][list(BROWS)]), "the brows calm all the way"


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
