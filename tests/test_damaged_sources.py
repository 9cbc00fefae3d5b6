"""Sources a tester broke on purpose: the output written over its own source, files cut short or cut while being
read, corrupt bytes and a source overwritten mid-run, a phone's rotation tag, a text file, a stream that does not
answer, `--source -1`; and a fuzz test over byte-level damage of a real clip.

Every file is made here from a shared clip. What a run may end in: a complete output (exit 0, or 3 with one warning
line when the source was damaged) or one error line (exit 2) and no file; never a traceback or a half file.
"""

from __future__ import annotations

import logging
import os
import random
import re
import socket
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from livemood.cli import main
from livemood.config import EXIT_SOURCE_DAMAGED, EXIT_USAGE, Controls, OutputConfig, RunConfig, SourceConfig, UsageError
from livemood.controls import ControlState
from livemood.face.tracker import FaceTracker
from livemood.live.pipeline import Pipeline
from livemood.live.sinks import FileSink
from livemood.live.sources import FileSource
from livemood.live.stats import StageTimes
from livemood.video import VideoReader

from .conftest import read_frames


def make_clip(path: Path, source: Path, frames: int, size: tuple[int, int] | None = None, rotation: int = 0,
              faststart: bool = True) -> list[np.ndarray]:
    """Re-encode `source`'s first `frames` frames (cropped to `size`, centred) with its audio for as long, into
    `path`. With `rotation` (counter-clockwise degrees, a multiple of 90) the pictures are stored turned and tagged
    to be shown upright, as a phone does. `faststart` puts the index before the data. Returns the upright frames."""
    upright = read_frames(source, frames)
    if size is not None:
        h, w = upright[0].shape[:2]
        top, left = (h - size[1]) // 2, (w - size[0]) // 2
        upright = [np.ascontiguousarray(f[top:top + size[1], left:left + size[0]]) for f in upright]
    stored = [np.ascontiguousarray(np.rot90(f, -rotation // 90)) for f in upright]
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(source)) as src, av.open(str(path), "w", options=options) as out:
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = stored[0].shape[1], stored[0].shape[0], "yuv420p"
        if rotation:
            video.set_display_rotation(rotation)
        audio_in = src.streams.audio[0]
        audio = out.add_stream_from_template(audio_in)
        for image in stored:
            out.mux(video.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
        out.mux(video.encode())
        for packet in src.demux(audio_in):
            if packet.dts is None or packet.pts * packet.time_base >= Fraction(frames, 25):
                break
            packet.stream = audio
            out.mux(packet)
    return upright


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory, media: Path) -> Path:
    """A real 2 s talking-head clip with its audio, index first (as the tester's): 50 frames of 240x240."""
    path = tmp_path_factory.mktemp("clip") / "take.mp4"
    make_clip(path, media / "talk_d.mp4", 50, size=(240, 240))
    return path


def run_cli(argv: list[str]) -> int:
    try:
        return main([*argv, "--engine", "passthrough"])
    except SystemExit as e:
        return int(e.code or 0)


def frames_in(path: Path) -> int:
    """The frames of a video, decoded to the end: raises if any part of it is damaged."""
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(c.streams.video[0]))


def warnings_in(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def damaged(source: Path, target: Path, change: Callable[[bytearray], bytearray]) -> Path:
    target.write_bytes(bytes(change(bytearray(source.read_bytes()))))
    return target


# --- the output is the source ------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["same path", "same path spelled otherwise", "symlink", "hard link"])
def test_output_that_is_the_source_is_refused_before_anything_is_written(
    how: str, clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "rec.mp4"
    source.write_bytes(clip.read_bytes())
    before = source.read_bytes()
    output = {"same path": source, "same path spelled otherwise": tmp_path / "x" / ".." / "rec.mp4",
              "symlink": tmp_path / "link.mp4", "hard link": tmp_path / "hard.mp4"}[how]
    if how == "same path spelled otherwise":
        (tmp_path / "x").mkdir()
    elif how == "symlink":
        output.symlink_to(source)
    elif how == "hard link":
        os.link(source, output)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert run_cli(["--source", str(source), "--output", str(output)]) == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is the source file itself" in err[0], err
    assert source.read_bytes() == before, "the recording is untouched"
    assert sorted(p.name for p in tmp_path.iterdir()) == names, "nothing was written, not even a temporary file"
    with pytest.raises(UsageError, match="source file itself"):  # the Python API goes through the same check
        RunConfig(SourceConfig.parse(str(output)), OutputConfig(source))


# --- cut short ---------------------------------------------------------------------------------------------------


def test_source_cut_short_says_how_many_frames_were_read_and_exits_3(
    clip: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = damaged(clip, tmp_path / "cut.mp4", lambda b: b[: len(b) // 2])
    out = tmp_path / "out.mp4"
    with caplog.at_level(logging.INFO):
        assert run_cli(["--source", str(source), "--output", str(out)]) == EXIT_SOURCE_DAMAGED
    (line,) = warnings_in(caplog)
    read = int(re.search(r"(\d+) frames read", line).group(1))
    assert "ended early" in line and "of the 50 its index lists" in line, line
    assert 10 < read < 50
    assert frames_in(out) == read, "the output is complete for what was read"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.mp4", "out.mp4"]
    original = read_frames(clip)
    with av.open(str(out)) as c:  # each frame is the source's frame of its time (a cut may leave gaps at the end)
        err = [np.abs(f.to_ndarray(format="bgr24").astype(int) - original[round(f.time * 25)]).mean()
               for f in c.decode(c.streams.video[0])]
    assert max(err) < 4


def test_a_cut_short_matroska_file_is_told_by_its_duration(clip: Path, tmp_path: Path) -> None:
    mkv = tmp_path / "take.mkv"
    with av.open(str(clip)) as src, av.open(str(mkv), "w") as out:  # the same packets, without a frame count
        stream = out.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    with VideoReader(mkv, warn_damage=False) as reader:
        assert reader.declared_frames is None
        assert reader.count_rest() == 50 and reader.damage is None
    cut = damaged(mkv, tmp_path / "cut.mkv", lambda b: b[: len(b) // 3])
    with VideoReader(cut, warn_damage=False) as reader:
        reader.count_rest()
        assert reader.damage is not None and "ended early" in reader.damage and "of the 2.0 s it declares" in (
            reader.damage)


class Meddler:
    """An engine that does something to the source file when it reaches frame `at`, passing frames through."""

    name = "meddler"
    needs_face = needs_audio = False

    def __init__(self, at: int, act: Callable[[], None]) -> None:
        self.at, self.act, self.calls = at, act, 0

    def process(self, frame: np.ndarray, face: object, audio: object, controls: Controls) -> np.ndarray:
        self.calls += 1
        if self.calls == self.at:
            self.act()
        return frame

    def close(self) -> None:
        pass


def run_meddled(source: Path, out: Path, act: Callable[[], None]) -> tuple[int, str | None]:
    file_source = FileSource(source)
    sink = FileSink(out, file_source.size, file_source.fps, file_source.audio_path, file_source.time_base)
    pipeline = Pipeline(file_source, Meddler(10, act), [sink], ControlState(Controls()), StageTimes(), paced=False)
    result = pipeline.run()
    assert not result.interrupted and result.engine_errors == 0
    return result.frames, result.source_damage


def test_source_cut_while_being_read(media: Path, tmp_path: Path) -> None:
    source, out = tmp_path / "growing.mp4", tmp_path / "out.mp4"
    source.write_bytes((media / "talk_d.mp4").read_bytes())  # index first, 175 frames; cut to half at frame 10
    frames, damage = run_meddled(source, out, lambda: os.truncate(source, source.stat().st_size // 2))
    assert damage is not None and "ended early" in damage and "of the 175 its index lists" in damage, damage
    assert 10 < frames < 175 and f"{frames} frames read" in damage
    assert frames_in(out) == frames


def test_source_overwritten_with_garbage_mid_run(media: Path, tmp_path: Path) -> None:
    source, out = tmp_path / "take.mp4", tmp_path / "out.mp4"
    source.write_bytes((media / "talk_d.mp4").read_bytes())
    garbage = random.Random(3).randbytes(source.stat().st_size)

    def overwrite() -> None:  # as `cp garbage take.mp4` does: the same file, emptied and written again
        with open(source, "wb") as f:
            f.write(garbage)

    frames, damage = run_meddled(source, out, overwrite)
    assert damage is not None, "the damage is reported"
    assert frames >= 10 and frames_in(out) == frames


# --- corrupt bytes -----------------------------------------------------------------------------------------------


def test_corrupt_bytes_in_the_middle_are_skipped_with_one_line(
    clip: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    def corrupt(b: bytearray) -> bytearray:
        rng = random.Random(7)
        start = len(b) // 2
        b[start:start + len(b) // 20] = rng.randbytes(len(b) // 20)
        return b

    source, out = damaged(clip, tmp_path / "corrupt.mp4", corrupt), tmp_path / "out.mp4"
    with caplog.at_level(logging.INFO):
        assert run_cli(["--source", str(source), "--output", str(out)]) == EXIT_SOURCE_DAMAGED
    (line,) = warnings_in(caplog)
    assert "damaged packet" in line and "skipped" in line, line
    assert "Traceback" not in capsys.readouterr().err
    assert not any(r.exc_info for r in caplog.records)
    read = int(re.search(r"(\d+) frames read", line).group(1))
    assert 25 < read < 50 and frames_in(out) == read


def test_evaluation_and_training_read_a_damaged_file_without_raising(clip: Path, tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    source = damaged(clip, tmp_path / "cut.mp4", lambda b: b[: len(b) * 2 // 3])
    with caplog.at_level(logging.WARNING), VideoReader(source) as reader:
        n = reader.count_rest()
    assert 0 < n < 50
    (line,) = warnings_in(caplog)  # a reader the caller does not report for logs the damage itself, once
    assert "ended early" in line and f"{n} frames read" in line


# --- rotation ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rotation", [-90, 90, 180], ids=lambda r: f"rotate {r}")
def test_rotated_phone_video_is_read_and_written_upright(
    rotation: int, media: Path, tmp_path: Path
) -> None:
    source, out = tmp_path / "phone.mp4", tmp_path / "out.mp4"
    upright = make_clip(source, media / "talk_b.mp4", 12, size=(360, 590), rotation=rotation)
    with VideoReader(source) as reader:
        assert reader.size == (360, 590), "the size a viewer sees"
        first = reader.read()
    assert first is not None and first[0].shape == (590, 360, 3)
    assert np.abs(first[0].astype(int) - upright[0]).mean() < 4, "the picture stands upright"
    with FaceTracker() as tracker:
        assert tracker.track(first[0], 0) is not None, "the face is found in the upright picture"
    with VideoReader(source, size=(180, 296)) as reader:
        item = reader.read()
        assert item is not None and item[0].shape == (296, 180, 3), "scaled to the upright size asked for"

    assert run_cli(["--source", str(source), "--output", str(out)]) == 0
    with av.open(str(out)) as c:
        stream = c.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (360, 590)
        written = [f for f in c.decode(stream)]
        assert all(f.rotation == 0 for f in written), "written upright: no rotation tag is needed"
        assert c.streams.audio, "the audio is kept"
    err = [np.abs(f.to_ndarray(format="bgr24").astype(int) - u).mean() for f, u in zip(written, upright, strict=True)]
    assert len(written) == 12 and max(err) < 5


# --- not a video, streams, camera indices ------------------------------------------------------------------------


@pytest.mark.parametrize("name,text", [
    ("notes.txt", "".join(f"line {i}: a meeting note, nothing to see here\n" for i in range(400))),  # FFmpeg's tty
    ("notes.nfo", "\x1b[31mANSI art\x1b[0m\n" * 200),
    ("notes.mp4", "a short text named like a video\n"),
])
def test_text_file_is_refused_as_not_a_video(
    name: str, text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / name
    source.write_text(text)
    (tmp_path / "out").mkdir()
    assert run_cli(["--source", str(source), "--output", str(tmp_path / "out" / "x.mp4")]) == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a video" in err[0], err
    assert list((tmp_path / "out").iterdir()) == []


def test_stream_that_does_not_answer_is_named_as_a_stream(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with socket.socket() as s:  # a port on this machine that nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"rtsp://viewer:hunter2@127.0.0.1:{port}/live"
    assert run_cli(["--source", url, "--output", str(tmp_path / "x.mp4")]) == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"stream rtsp://viewer:***@127.0.0.1:{port}/live could not be opened" in err[0], err
    assert "camera" not in err[0] and "hunter2" not in err[0]


@pytest.mark.parametrize("text", ["-1", "-2", "+3"])
def test_negative_camera_index_is_not_file_not_found(
    text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(["--source", text, "--output", str(tmp_path / "x.mp4")]) == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a camera index" in err[0] and "not found" not in err[0], err


# --- fuzz --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_clip(tmp_path_factory: pytest.TempPathFactory, media: Path) -> Path:
    """1 s (25 frames) of 128x128 with audio, index first: small enough to run often."""
    path = tmp_path_factory.mktemp("small") / "take.mp4"
    make_clip(path, media / "talk_c.mp4", 25, size=(128, 128))
    return path


def _damage() -> st.SearchStrategy[tuple[str, float, int, int]]:
    """(kind, where as a share of the file, how many bytes, seed)."""
    return st.tuples(st.sampled_from(["truncate", "overwrite", "zero", "flip bits", "delete", "insert"]),
                     st.floats(0.0, 1.0), st.integers(1, 4000), st.integers(0, 2**16))


def apply_damage(data: bytes, damage: tuple[str, float, int, int]) -> bytes:
    kind, where, size, seed = damage
    rng = random.Random(seed)
    b = bytearray(data)
    if not b:
        return data
    at = min(int(where * len(b)), len(b) - 1)
    if kind == "truncate":
        return bytes(b[:at])
    if kind == "overwrite":
        b[at:at + size] = rng.randbytes(len(b[at:at + size]))
    elif kind == "zero":
        b[at:at + size] = bytes(len(b[at:at + size]))
    elif kind == "flip bits":
        for _ in range(1 + size // 100):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
    elif kind == "delete":
        del b[at:at + size]
    else:
        b[at:at] = rng.randbytes(size)
    return bytes(b)


@settings(max_examples=20, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(damage=st.lists(_damage(), min_size=1, max_size=3))
def test_byte_damage_ends_in_a_complete_output_or_one_clear_line(
    damage: list[tuple[str, float, int, int]], small_clip: Path, tmp_path_factory: pytest.TempPathFactory,
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path_factory.mktemp("fuzz")
    data = small_clip.read_bytes()
    for d in damage:
        data = apply_damage(data, d)
    source, out = folder / "take.mp4", folder / "out.mp4"
    source.write_bytes(data)
    capsys.readouterr()
    caplog.clear()
    with caplog.at_level(logging.INFO):
        code = run_cli(["--source", str(source), "--output", str(out)])  # an exception here is the traceback
    err = capsys.readouterr().err
    assert "Traceback" not in err and not any(r.exc_info for r in caplog.records)
    assert code in (0, EXIT_USAGE, EXIT_SOURCE_DAMAGED), (code, err)
    if code == EXIT_USAGE:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("livemood: error:"), lines
        assert not out.exists()
    else:
        wrote = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"wrote {out}")]
        assert len(wrote) == 1
        assert frames_in(out) == int(re.search(r"\((\d+) frames\)", wrote[0]).group(1)), "complete, not half"
        warnings = warnings_in(caplog)
        if code == EXIT_SOURCE_DAMAGED:
            assert len(warnings) == 1 and warnings[0].startswith("livemood: warning:"), warnings
    assert sorted(p.name for p in folder.iterdir()) == sorted({"take.mp4", *(["out.mp4"] if out.exists() else [])}), (
        "no temporary file left behind")
