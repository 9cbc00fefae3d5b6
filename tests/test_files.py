"""File source → file sink on the shared clips: every frame, same size and timing, audio copied unchanged."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from livemood.config import Controls, OutputConfig, RunConfig, SourceConfig
from livemood.controls import ControlState
from livemood.live.pipeline import Pipeline, assemble
from livemood.live.sinks import FileSink
from livemood.live.sources import FileSource
from livemood.live.stats import StageTimes

from .conftest import CLIPS, audio_packets, read_frames


def video_info(path: Path) -> tuple[int, tuple[int, int], Fraction, list[float]]:
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        times = [float(f.time) for f in c.decode(stream)]
        return len(times), (stream.codec_context.width, stream.codec_context.height), stream.average_rate, times


def run_file(source: Path, out: Path) -> None:
    config = RunConfig(SourceConfig.parse(str(source)), OutputConfig(out), engine="passthrough")
    result = assemble(config, StageTimes()).run()
    assert result.engine_errors == 0 and not result.interrupted


@pytest.mark.parametrize("clip", CLIPS, ids=lambda p: p.name)
def test_file_to_file_keeps_frames_size_fps_and_audio(clip: Path, tmp_path: Path, media: Path) -> None:
    out = tmp_path / "out.mp4"
    run_file(clip, out)
    n_in, size_in, rate_in, times_in = video_info(clip)
    n_out, size_out, rate_out, times_out = video_info(out)
    assert (n_out, size_out, rate_out) == (n_in, size_in, rate_in)
    assert np.allclose(times_out, times_in, atol=1e-3), "frames keep their presentation times"
    assert audio_packets(out) == audio_packets(clip), "audio track copied packet for packet"
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"], "no temporary file left behind"


def test_passthrough_output_looks_like_the_input(tmp_path: Path, media: Path) -> None:
    clip = media / "talk_d.mp4"
    out = tmp_path / "out.mp4"
    run_file(clip, out)
    a, b = read_frames(clip, 20), read_frames(out, 20)
    psnr = [10 * np.log10(255**2 / np.mean((x.astype(float) - y) ** 2)) for x, y in zip(a, b, strict=True)]
    assert min(psnr) > 35, "only the encoder's loss (crf 18) separates input and output"


def test_scaled_file_source_gives_the_requested_size(media: Path) -> None:
    with FileSource(media / "talk_b.mp4", size=(320, 240)) as source:
        source.start()
        frame = source.get(timeout=5)
    assert frame is not None and frame.image.shape == (240, 320, 3)


class FailingEngine:
    """Raises on a stretch of frames in the middle of the stream."""

    name = "failing"
    needs_face = needs_audio = False

    def __init__(self, bad: range) -> None:
        self.bad = bad
        self.calls = 0

    def process(self, frame: np.ndarray, face: object, audio: object, controls: Controls) -> np.ndarray:
        self.calls += 1
        if self.calls - 1 in self.bad:
            raise RuntimeError("model exploded")
        return 255 - frame  # a visible change, so raw and processed frames can be told apart

    def close(self) -> None:
        pass


def test_engine_that_raises_mid_stream_keeps_output_flowing(
    tmp_path: Path, media: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clip, out = media / "talk_c.mp4", tmp_path / "out.mp4"
    engine = FailingEngine(range(40, 60))
    source = FileSource(clip)
    sink = FileSink(out, source.size, source.fps, source.audio_path, source.time_base)
    with caplog.at_level(logging.ERROR):
        result = Pipeline(source, engine, [sink], ControlState(Controls()), StageTimes(), paced=False).run()
    assert result.engine_errors == 20
    assert sum("failed; sending frames unchanged" in r.message for r in caplog.records) == 1, "logged once"
    raw, written = read_frames(clip), read_frames(out)
    assert len(written) == len(raw)
    # Raw frames were sent while the engine failed, inverted frames before and after.
    err = [np.abs(w.astype(int) - r).mean() for w, r in zip(written, raw, strict=True)]
    assert max(err[40:60]) < 5 and min(err[:40] + err[60:]) > 50


class InterruptingEngine(FailingEngine):
    """Acts like Ctrl-C arriving in the middle of a file job."""

    def process(self, frame: np.ndarray, face: object, audio: object, controls: Controls) -> np.ndarray:
        self.calls += 1
        if self.calls == 30:
            raise KeyboardInterrupt
        return frame


def test_interrupted_file_job_leaves_no_file(tmp_path: Path, media: Path) -> None:
    out = tmp_path / "out.mp4"
    source = FileSource(media / "talk_b.mp4")
    sink = FileSink(out, source.size, source.fps, source.audio_path, source.time_base)
    pipeline = Pipeline(source, InterruptingEngine(range(0)), [sink], ControlState(Controls()), StageTimes(), False)
    result = pipeline.run()
    assert result.interrupted
    assert list(tmp_path.iterdir()) == [], "neither the output nor its temporary file remains"
    assert not source._thread.is_alive(), "the reader thread was joined"
