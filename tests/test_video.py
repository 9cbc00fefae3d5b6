"""The one video reader: file sources, evaluation and training see the same frames, times and frame rate."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from livemood.live.handoff import Closed
from livemood.live.sources import FileSource
from livemood.training.data import _decode_faces
from livemood.video import VideoReader

from .conftest import CLIPS, read_frames

FRAMES = 12


def write(path: Path, fmt: str, frames: list[np.ndarray]) -> Path:
    """Encode BGR frames with H.264 into `path` in container format `fmt`."""
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for image in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
        out.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def odd_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Files whose timing a reader has to work out: a raw H.264 stream (no presentation times at all) and an
    MPEG-TS (no average rate), made from a real clip's first frames."""
    frames = read_frames(CLIPS[0], FRAMES)
    folder = tmp_path_factory.mktemp("odd")
    return {"raw h264": write(folder / "clip.h264", "h264", frames),
            "mpeg-ts": write(folder / "clip.ts", "mpegts", frames)}


def source_times(path: Path) -> tuple[float, list[float]]:
    source = FileSource(path)
    source.start()
    times = []
    try:
        while True:
            frame = source.get(timeout=5.0)
            assert frame is not None
            times.append(frame.time_s)
    except Closed:
        pass
    finally:
        source.close()
    return source.fps, times


@pytest.mark.parametrize("kind", ["raw h264", "mpeg-ts"])
def test_sources_evaluation_and_training_agree_on_timing(kind: str, odd_files: dict[str, Path]) -> None:
    path = odd_files[kind]
    fps, times = source_times(path)
    with VideoReader(path) as reader:
        read_times = [item[1] for item in iter(reader.read, None)]
    training_fps = _decode_faces(path)[2]
    assert fps == reader.fps == training_fps
    assert len(times) == len(read_times) == FRAMES, "every frame"
    assert times == read_times
    steps = np.diff(times)
    assert np.all(steps > 0), "frames without presentation times still move forward in time"
    if kind == "raw h264":  # no stamps at all: placed at index / fps
        assert np.allclose(steps, 1.0 / fps)


@pytest.mark.parametrize("clip", CLIPS, ids=lambda p: p.name)
def test_file_source_and_reader_agree_on_the_shared_clips(clip: Path) -> None:
    with VideoReader(clip) as reader:
        first = [reader.read() for _ in range(3)]
        fps, size = reader.fps, reader.size
    source = FileSource(clip)
    try:
        assert (source.fps, source.size) == (fps, size)
    finally:
        source.close()
    assert all(item is not None for item in first)
