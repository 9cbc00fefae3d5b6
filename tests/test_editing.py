"""`livemood.edit`, the Python API: the CLI's pipeline with a progress callback, every frame kept, bad input refused
before anything is written, `import livemood` light; and the issue's keyframe bar on a real clip, measured with the
classifier's per-frame series."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

import livemood
from livemood.config import Controls, UsageError
from livemood.editing import EditResult
from livemood.evaluation.report import EvaluationReport
from livemood.evaluation.videos import evaluate_videos
from livemood.live.keyframes import schedule_from
from livemood.models.expression import CLASSES

from .conftest import MEDIA, read_frames
from .test_evaluate import write_lossless

TALK_D_FRAMES = 175  # talk_d.mp4: 7 s at 25 fps, with audio
BAR_KEYFRAMES = [(0.0, "neutral", 0), (2.0, "happy", 0.8), (4.0, "sad", 0.8)]  # the bar
BAR_FRAMES = 150  # talk_c.mp4 cut to 6 s
MOVED_LEVELS = 20  # grey levels: H.264 at the file sink's quality changes hardly any pixel by more


def moved_fraction(source: np.ndarray, edited: np.ndarray) -> float:
    """The fraction of pixels changed by more than re-encoding changes them: where the warp moved the face."""
    return float((np.abs(source.astype(int) - edited).max(axis=2) > MOVED_LEVELS).mean())


def test_edit_keeps_every_frame_copies_the_audio_and_reports_progress(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="livemood")
    out = tmp_path / "edit.mp4"
    calls: list[tuple[int, int | None]] = []
    result = livemood.edit(MEDIA / "talk_d.mp4", out, keyframes=[(0.0, "neutral", 0), (2.5, "happy", 0.7)],
                           expressiveness=1.2, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(k, TALK_D_FRAMES) for k in range(1, TALK_D_FRAMES + 1)]
    assert "neutral face settled from the first 6.0 s" in caplog.text, "a file's neutral face is known before it starts"
    assert result == EditResult(out, TALK_D_FRAMES, result.seconds, 0) and result.seconds > 0
    with av.open(str(out)) as c:
        assert len(c.streams.audio) == 1
    source, edited = read_frames(MEDIA / "talk_d.mp4"), read_frames(out)
    assert len(edited) == TALK_D_FRAMES
    moved = [moved_fraction(a, b) for a, b in zip(source, edited, strict=True)]
    # 2.5 s is frame 62; the ramp is over by frame 68. Before it only the speaker's own expressions move, 1.2 times
    # as far: a few pixels beyond re-encoding (1.3e-3 of them at most, 7e-5 on average), the emotion 1.9e-2 or more.
    assert max(moved[:62]) < 5e-3 < 1e-2 < min(moved[68:]), "the face changes from the keyframe on, not before"


def test_edit_holds_a_constant_emotion_without_keyframes(tmp_path: Path) -> None:
    out = tmp_path / "sad.mp4"
    result = livemood.edit(str(MEDIA / "talk_a.mp4"), str(out), emotion="sad", intensity=0.6)
    source, edited = read_frames(MEDIA / "talk_a.mp4"), read_frames(out)
    assert result.frames == len(edited) == len(source)
    moved = [moved_fraction(a, b) for a, b in zip(source, edited, strict=True)]
    assert moved[0] < 1e-4 < 1e-3 < min(moved[10:]), "sad from the first frames' ramp on"


def test_a_keyframe_file_gives_the_same_schedule_as_the_list(tmp_path: Path) -> None:
    path = tmp_path / "k.csv"
    path.write_text("time,emotion,intensity\n0,neutral,0\n00:02.000,happy,0.8\n0:00:04,sad,0.8\n")
    base = Controls()
    assert schedule_from(path, base).keyframes == schedule_from(str(path), base).keyframes
    assert schedule_from(path, base).keyframes == schedule_from(BAR_KEYFRAMES, base).keyframes
    as_dicts = [{"time": t, "emotion": e, "intensity": i} for t, e, i in BAR_KEYFRAMES]
    assert schedule_from(as_dicts, base).keyframes == schedule_from(BAR_KEYFRAMES, base).keyframes


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"keyframes": [(0, "neutral", 0), (1, "joyful", 0.5)]}, "keyframes[1]: unknown emotion 'joyful'"),
    ({"keyframes": [(1, "happy", 0.5), (0.5, "sad", 0.5)]}, "keyframes[1]: time 0.500 s does not come after"),
    ({"keyframes": [(0, "happy")]}, "keyframes[0]: expected (time, emotion, intensity"),
    ({"keyframes": [{"time": 0, "emotion": "happy", "intensity": 0.5, "speed": 2}]}, "unknown key 'speed'"),
    ({"keyframes": "missing.csv"}, "keyframes file not found: missing.csv"),
    ({"intensity": 1.5}, "intensity must be between 0 and 1"),
    ({"expressiveness": 2.5}, "expressiveness must be between 0 and 2"),
    ({"engine": "magic"}, "unknown engine"),
    ({"engine": "neural"}, "the neural engine needs --weights"),
    ({"source": "0"}, "edit() renders recorded video"),
    ({"source": "missing.mp4"}, "source file not found: missing.mp4"),
])
def test_edit_refuses_bad_input_in_one_line_before_writing(kwargs: dict[str, object], expected: str,
                                                           tmp_path: Path) -> None:
    source = kwargs.pop("source", MEDIA / "talk_d.mp4")
    with pytest.raises(UsageError) as e:
        livemood.edit(source, tmp_path / "x.mp4", **kwargs)  # type: ignore[arg-type]
    assert expected in str(e.value) and "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_a_progress_callback_that_raises_cancels_and_leaves_nothing(tmp_path: Path) -> None:
    def cancel_at_ten(done: int, total: int | None) -> None:
        if done == 10:
            raise RuntimeError("cancelled")

    with pytest.raises(RuntimeError, match="cancelled"):
        livemood.edit(MEDIA / "talk_d.mp4", tmp_path / "x.mp4", emotion="happy", progress=cancel_at_ten)
    assert list(tmp_path.iterdir()) == []


def test_import_livemood_stays_light() -> None:
    code = ("import sys, livemood; heavy = {'cv2', 'av', 'numpy', 'livemood.editing'} & set(sys.modules); "
            "assert not heavy, heavy; from livemood import edit; assert edit is livemood.editing.edit")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, cwd=Path(__file__).parents[1])
    with pytest.raises(AttributeError, match="no attribute 'edits'"):
        livemood.edits  # noqa: B018


@pytest.fixture(scope="module")
def bar(tmp_path_factory: pytest.TempPathFactory) -> tuple[EvaluationReport, Path]:
    """talk_c.mp4 cut to 6 s, edited with the bar's keyframes by the warp engine, and evaluated (with its plot)."""
    folder = tmp_path_factory.mktemp("bar")
    cut = write_lossless(folder / "talk_c_6s.mkv", read_frames(MEDIA / "talk_c.mp4", BAR_FRAMES))
    result = livemood.edit(cut, folder / "edit.mp4", keyframes=BAR_KEYFRAMES, engine="warp")
    assert result.frames == BAR_FRAMES
    plot = folder / "edit.png"
    report = evaluate_videos(cut, result.output, None, plot, progress=False,
                             keyframes=schedule_from(BAR_KEYFRAMES, Controls()))
    return report, plot


def span_mean(report: EvaluationReport, emotion: str, start_s: float, end_s: float, output: bool = True) -> float:
    """The classifier's mean probability of `emotion` over the frames from `start_s` to `end_s`."""
    s = report.series
    probs = s.probs_output if output else s.probs_source
    at = (s.time_s >= start_s) & (s.time_s < end_s)
    return float(np.nanmean(probs[at, CLASSES.index(emotion)]))


def test_bar_keyframes_make_the_face_happy_then_sad(bar: tuple[EvaluationReport, Path]) -> None:
    report, plot = bar
    assert report.source_frames == report.output_frames == report.face_frames == BAR_FRAMES, "every frame kept"
    assert plot.stat().st_size > 20_000
    sad = [span_mean(report, "sad", *span) for span in ((0.0, 2.0), (2.5, 4.0), (4.5, 6.0))]
    assert sad[2] > max(sad[:2]), sad  # measured: 0.007, 0.179, 0.351
    # The speaker smiles in 0-2 s (the input's P(happy) is 0.68 there, 0.30 in 2.5-4 s), so the edit is seen in
    # what it adds: in 2.5-4 s it raises P(happy) well above the input, in 0-2 s (neutral 0) it adds nothing.
    added = [span_mean(report, "happy", *span) - span_mean(report, "happy", *span, output=False)
             for span in ((0.0, 2.0), (2.5, 4.0))]
    assert added[1] > 0.2 and abs(added[0]) < 0.05, added  # measured: +0.018, +0.297


def test_bar_happy_span_above_the_neutral_span(bar: tuple[EvaluationReport, Path]) -> None:
    report, _ = bar
    assert span_mean(report, "happy", 2.5, 4.0) > span_mean(report, "happy", 0.0, 2.0)
