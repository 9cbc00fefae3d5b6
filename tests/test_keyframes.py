"""Keyframes: the file formats, every refusal (one line with the line number, exit 2, nothing written), the ramp
time, the tour as a schedule, frame-exact rendering of a real clip, and evaluate's keyframe plot."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import pytest

from livemood.cli import main
from livemood.config import EMOTIONS, RAMP_TIME_S, Controls, Keyframe, Schedule, UsageError
from livemood.controls import ControlState, Ramp
from livemood.engines.warp import WarpEngine, emotion_weights
from livemood.face.tracker import Face, FaceTracker
from livemood.live.keyframes import load_keyframes, parse_time, schedule_from
from livemood.live.pipeline import Pipeline
from livemood.live.sinks import NullSink, Sink
from livemood.live.sources import FileSource
from livemood.live.stats import StageTimes

from .conftest import MEDIA, read_frames
from .test_evaluate import write_lossless

FPS = 25  # talk_d.mp4's frame rate
CUT_FRAMES = 40  # 1.6 s of talk_d: enough for three keyframes
BASE = Controls()

CSV = """time,emotion,intensity,expressiveness,ramp
# a comment, then a blank line

0,neutral,0
00:00.500,Happy,0.8,1.5,0.4
0:00:01.000,sad,0.6,,0
"""


@pytest.fixture(scope="module")
def cut(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first CUT_FRAMES frames of talk_d.mp4, losslessly."""
    path = tmp_path_factory.mktemp("keyframes") / "cut.mkv"
    return write_lossless(path, read_frames(MEDIA / "talk_d.mp4", CUT_FRAMES))


@pytest.fixture
def keyframes_csv(tmp_path: Path) -> Path:
    path = tmp_path / "k.csv"
    path.write_text(CSV)
    return path


def test_times_in_seconds_and_clock_syntax() -> None:
    assert parse_time("2.5") == 2.5 and parse_time("3") == 3.0
    assert parse_time("02:03.250") == 123.25 and parse_time("1:02:03.5") == 3723.5 and parse_time("00:07") == 7.0
    for bad in ("-1", "1:75", "1:02:60", "2,5", "1e3", "nan", "", "00:01.2.3"):
        with pytest.raises(UsageError, match="is not seconds"):
            parse_time(bad)


def test_csv_and_json_give_the_same_schedule(keyframes_csv: Path, tmp_path: Path) -> None:
    from_csv = load_keyframes(keyframes_csv, BASE)
    json_path = tmp_path / "k.json"
    json_path.write_text(json.dumps([
        {"time": 0, "emotion": "neutral", "intensity": 0},
        {"time": "00:00.500", "emotion": "happy", "intensity": 0.8, "expressiveness": 1.5, "ramp": 0.4},
        {"time": 1.0, "emotion": "sad", "intensity": "0.6", "expressiveness": None, "ramp": 0},
    ]))
    from_json = load_keyframes(json_path, BASE)
    assert from_csv.keyframes == from_json.keyframes
    assert from_csv.keyframes == (
        Keyframe(0.0, Controls("neutral", 0.0)),
        Keyframe(0.5, Controls("happy", 0.8, expressiveness=1.5, ramp_s=0.4)),
        # no expressiveness given: the previous keyframe's; no ramp given: the usual one would apply, here 0
        Keyframe(1.0, Controls("sad", 0.6, expressiveness=1.5, ramp_s=0.0)),
    )
    assert from_csv.origin == "keyframes from k.csv"


def test_controls_at_holds_each_keyframe_until_the_next(keyframes_csv: Path) -> None:
    base = Controls("angry", 0.3, expressiveness=0.7)
    late = schedule_from([(1.0, "happy", 0.5), (2.0, "sad", 0.4)], base)
    assert late.controls_at(0.0) == base and late.controls_at(0.999) == base  # before the first: the run's own
    assert late.controls_at(1.0) == Controls("happy", 0.5, expressiveness=0.7, ramp_s=RAMP_TIME_S)
    assert late.controls_at(99.0).emotion == "sad"
    assert [(a, b, c.emotion) for a, b, c in late.spans(3.0)] == [(0.0, 1.0, "angry"), (1.0, 2.0, "happy"),
                                                                  (2.0, 3.0, "sad")]


def test_the_tour_is_a_looping_schedule() -> None:
    tour = Schedule.tour(1.5, Controls(intensity=0.8))
    emotions = [tour.controls_at(t).emotion for t in np.arange(0.0, 24.0, 0.5)]
    assert emotions == [EMOTIONS[int(t // 1.5) % len(EMOTIONS)] for t in np.arange(0.0, 24.0, 0.5)]
    assert {tour.controls_at(t).intensity for t in range(20)} == {0.8}
    assert len(tour.spans(13.0)) == len(EMOTIONS) + 1  # unrolled past the loop
    assert Schedule.tour(0.2, BASE).controls_at(0.6).emotion == EMOTIONS[3]  # though 3 × 0.2 is 0.6000000000000001
    with pytest.raises(UsageError, match="positive number of seconds"):
        Schedule.tour(0.0, BASE)


def test_ramp_moves_at_the_rate_the_ramp_time_gives_and_zero_cuts() -> None:
    ramp = Ramp(2)
    old, new = np.array([0.8, 0.0]), np.array([0.0, 0.4])
    np.testing.assert_array_equal(ramp.step(old, 0, 0.0), old)  # a cut
    # A 2 s ramp moves each weight 0.5 per second, the old one down while the new one comes up...
    np.testing.assert_allclose(ramp.step(new, 400, 2.0), [0.6, 0.2])
    np.testing.assert_allclose(ramp.step(new, 800, 2.0), [0.4, 0.4])  # ...the smaller change arrives first...
    np.testing.assert_allclose(ramp.step(new, 1600, 2.0), new, atol=1e-12)  # ...and none takes longer than 2 s
    # Without a ramp time: the usual one, full scale in RAMP_TIME_S.
    np.testing.assert_allclose(ramp.step(old, 1600 + round(RAMP_TIME_S * 500)), [0.5, 0.0])


def test_controls_refuse_a_negative_or_endless_ramp() -> None:
    for bad in (-0.1, math.inf, math.nan):
        with pytest.raises(UsageError, match="ramp must be 0 or more seconds"):
            Controls(ramp_s=bad)


def test_keys_are_refused_while_keyframes_own_the_controls(caplog: pytest.LogCaptureFixture) -> None:
    state = ControlState(Controls("happy", 0.5), owner="keyframes from k.csv")
    with caplog.at_level(logging.INFO, logger="livemood.controls"):
        assert state.update(emotion="sad") == Controls("happy", 0.5)
    assert [r.getMessage() for r in caplog.records] == ["keyframes from k.csv set the controls in this run: key "
                                                        "ignored"]


HEADER = "time,emotion,intensity,expressiveness,ramp\n"
REFUSALS = {  # case: (file name, content, what the one line says)
    "unknown emotion": ("k.csv", HEADER + "0,neutral,0\n2,joyful,0.5\n", "k.csv line 3: unknown emotion 'joyful'"),
    "time going backwards": ("k.csv", HEADER + "0,neutral,0\n2,happy,0.5\n1.5,sad,0.5\n",
                             "k.csv line 4: time 1.500 s does not come after the previous keyframe's 2.000 s"),
    "intensity above 1": ("k.csv", HEADER + "0,happy,1.2\n", "k.csv line 2: intensity must be between 0 and 1"),
    "intensity not a number": ("k.csv", HEADER + "0,happy,lots\n", "k.csv line 2: intensity 'lots' is not a number"),
    "expressiveness above 2": ("k.csv", HEADER + "0,happy,0.5,2.5\n",
                               "k.csv line 2: expressiveness must be between 0 and 2"),
    "negative ramp": ("k.csv", HEADER + "0,happy,0.5,1,-0.5\n", "k.csv line 2: ramp must be 0 or more seconds"),
    "bad time syntax": ("k.csv", HEADER + "0,neutral,0\n00:61.000,happy,0.5\n", "k.csv line 3: time '00:61.000' is"),
    "unknown column": ("k.csv", "time,emotion,intensity,speed\n0,happy,0.5\n", "k.csv line 1: unknown column 'speed'"),
    "no header": ("k.csv", "0,neutral,0\n", "k.csv line 1: unknown column '0'"),
    "too many cells": ("k.csv", "time,emotion,intensity\n0,happy,0.5,1\n", "k.csv line 2: 4 cells"),
    "missing intensity": ("k.csv", "time,emotion,intensity\n0,happy,\n", "k.csv line 2: no intensity given"),
    "no keyframes": ("k.csv", HEADER, "keyframes from k.csv: no keyframes"),
    "JSON unknown emotion": ("k.json", '[{"time": 0, "emotion": "neutral", "intensity": 0},\n'
                             ' {"time": 1, "emotion": "joyful", "intensity": 0.5}]',
                             "k.json entry [1]: unknown emotion 'joyful'"),
    "JSON time going backwards": ("k.json", '[{"time": "00:02", "emotion": "happy", "intensity": 0.5},'
                                  '{"time": 1, "emotion": "sad", "intensity": 0.5}]',
                                  "k.json entry [1]: time 1.000 s does not come after"),
    "JSON unknown key": ("k.json", '[{"time": 0, "emotion": "happy", "intensity": 0.5, "speed": 2}]',
                         "k.json entry [0]: unknown key 'speed'"),
    "JSON negative time": ("k.json", '[{"time": -1, "emotion": "happy", "intensity": 0.5}]',
                           "k.json entry [0]: time must be 0 or more seconds"),
    "JSON syntax": ("k.json", '[{"time": 0,\n "emotion": happy}]', "k.json line 2: not valid JSON"),
    "JSON not a list": ("k.json", '{"time": 0}', "k.json: expected a list of keyframes"),
    "other extension": ("k.txt", "", "a keyframes file is .csv or .json"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_bad_keyframes_are_one_line_exit_2_and_nothing_written(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name, content, expected = REFUSALS[case]
    (tmp_path / name).write_text(content)
    (tmp_path / "out").mkdir()
    code = main(["--source", str(MEDIA / "talk_d.mp4"), "--keyframes", str(tmp_path / name),
                 "--output", str(tmp_path / "out" / "x.mp4")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("livemood: error:") and expected in err[0], err
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize(("argv", "expected"), [
    (["--source", "0"], "keyframes are for recorded video"),
    (["--source", "rtsp://camera.invalid/live"], "keyframes are for recorded video"),
    (["--source", "demo", "--tour", "1"], "give --tour or --keyframes, not both"),
    (["--source", "demo", "--keyframes", "nope.csv"], "keyframes file not found: nope.csv"),
])
def test_keyframes_need_a_recorded_source_and_no_tour(
    argv: list[str], expected: str, keyframes_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if "--keyframes" not in argv:
        argv = [*argv, "--keyframes", str(keyframes_csv)]
    assert main([*argv, "--output", str(tmp_path / "x.mp4")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err
    assert not (tmp_path / "x.mp4").exists()


@pytest.mark.parametrize(("extra", "expected"), [
    (["--weights", "g.pth"], "render keyframes with `livemood --keyframes` first"),
    ([], "k.csv line 3: unknown emotion 'joyful'"),
])
def test_evaluate_refuses_bad_keyframes_before_measuring(
    extra: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keyframes = tmp_path / "k.csv"
    keyframes.write_text(HEADER + "0,neutral,0\n1,joyful,0.5\n" if not extra else CSV)
    clip = str(MEDIA / "talk_d.mp4")
    assert main(["evaluate", "--source", clip, "--output", clip, "--keyframes", str(keyframes),
                 "--plot", str(tmp_path / "p.png"), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err
    assert list(tmp_path.iterdir()) == [keyframes]


class ObservedWarp(WarpEngine):
    """The warp engine, noting the controls and ramped emotion weights it used for each frame."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, Controls, np.ndarray]] = []

    def process(self, frame: np.ndarray, face: Face | None, audio: np.ndarray | None, controls: Controls
                ) -> np.ndarray:
        out = super().process(frame, face, audio, controls)
        assert face is not None, "talk_d shows its face in every frame"
        self.seen.append((face.timestamp_ms, controls, self.ramp.value.copy()))
        return out


def test_each_frame_gets_the_controls_of_its_own_time(cut: Path, keyframes_csv: Path) -> None:
    schedule = load_keyframes(keyframes_csv, BASE)
    engine = ObservedWarp()
    pipeline = Pipeline(FileSource(cut), engine, [NullSink()], ControlState(BASE), StageTimes(), paced=False,
                        tracker=FaceTracker(), schedule=schedule)
    assert pipeline.run().frames == CUT_FRAMES
    assert [ms for ms, _, _ in engine.seen] == [k * 1000 // FPS for k in range(CUT_FRAMES)]
    assert all(controls == schedule.controls_at(k / FPS) for k, (_, controls, _) in enumerate(engine.seen))
    weights = [w for _, _, w in engine.seen]
    happy, sad = emotion_weights(Controls("happy", 0.8)), emotion_weights(Controls("sad", 0.6))
    # 0.5 s falls between frames 12 (0.48 s) and 13 (0.52 s): happy starts on frame 13, its 0.4 s ramp moving
    # each emotion weight by at most a tenth per 40 ms frame; sad at 1.0 s (frame 25)
    # is a cut.
    per_frame = 0.04 / 0.4  # an emotion weight goes from 0 to 1 in the ramp time
    assert not np.any(weights[12])
    np.testing.assert_allclose(weights[13], np.clip(happy, -per_frame, per_frame))
    assert not np.allclose(weights[18], happy)
    np.testing.assert_allclose(weights[22], happy)  # within the ramp time (frame 23 is 0.4 s on)
    np.testing.assert_allclose(weights[24], happy)
    np.testing.assert_allclose(weights[25], sad)


def test_the_tour_shows_every_emotion_in_turn_on_a_real_clip(cut: Path) -> None:
    engine = ObservedWarp()
    tour = Schedule.tour(0.2, Controls(intensity=0.8))
    Pipeline(FileSource(cut), engine, [NullSink()], ControlState(BASE), StageTimes(), paced=False,
             tracker=FaceTracker(), schedule=tour).run()
    # 0.2 s is 5 frames: each emotion in turn from the frame at its switch time (3 × 0.2 s is frame 15's 600 ms).
    assert [controls.emotion for _, controls, _ in engine.seen] == [e for e in EMOTIONS for _ in range(5)]
    assert {controls.intensity for _, controls, _ in engine.seen} == {0.8}


class Recorder(Sink):
    """Keeps every frame it is sent, optionally taking `delay_s` over each (a slower machine)."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.images: list[np.ndarray] = []
        self.delay_s = delay_s

    def send(self, image: np.ndarray, time_s: float) -> None:
        self.images.append(image.copy())
        time.sleep(self.delay_s)


def test_two_renders_give_identical_frames_whatever_the_speed(cut: Path, keyframes_csv: Path) -> None:
    schedule = load_keyframes(keyframes_csv, BASE)
    renders = []
    for delay_s in (0.0, 0.01):
        recorder = Recorder(delay_s)
        Pipeline(FileSource(cut), WarpEngine(), [recorder], ControlState(BASE), StageTimes(), paced=False,
                 tracker=FaceTracker(), schedule=schedule).run()
        renders.append(recorder.images)
    first, second = renders
    assert len(first) == len(second) == CUT_FRAMES
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    source = read_frames(cut)
    assert all(np.array_equal(a, b) for a, b in zip(source[:13], first, strict=False)), "neutral 0 until 0.5 s"
    assert not any(np.array_equal(a, b) for a, b in zip(source[13:], first[13:], strict=True))


def test_evaluate_draws_the_keyframes_under_the_plot(
    cut: Path, keyframes_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "a.mp4"
    assert main(["--source", str(cut), "--keyframes", str(keyframes_csv), "--output", str(output)]) == 0
    assert len(read_frames(output)) == CUT_FRAMES
    capsys.readouterr()
    plot = tmp_path / "a.png"
    assert main(["evaluate", "--source", str(cut), "--output", str(output), "--keyframes", str(keyframes_csv),
                 "--plot", str(plot), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    spans = report["keyframes"]["spans"]
    assert [(s["start_s"], s["emotion"], s["target_class"]) for s in spans] == [
        (0.0, "neutral", "neutral"), (0.5, "happy", "happy"), (1.0, "sad", "sad")]
    # Measured once ramped: 0.2-0.5 s, 0.9-1.0 s (after happy's 0.4 s ramp), 1.0-1.6 s (a cut).
    assert [s["frames"] for s in spans] == [8, 2, 15]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 20_000
