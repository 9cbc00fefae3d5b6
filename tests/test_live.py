"""Live paths: the virtual camera through a recording pyvirtualcam backend (this machine has no v4l2loopback)
and the camera path through OpenCV reading a file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np
import pytest
import pyvirtualcam
from pyvirtualcam.util import decode_fourcc, encode_fourcc

from livemood.config import Controls, OutputConfig, RunConfig, SourceConfig
from livemood.controls import ControlState
from livemood.engines import PassthroughEngine
from livemood.live.pipeline import Pipeline, assemble
from livemood.live.sinks import PixelFormat, Sink, VirtualCameraSink, to_pixel_format
from livemood.live.sources import CameraSource
from livemood.live.stats import StageTimes

from .conftest import read_frames


class RecordingCamera:
    """A pyvirtualcam backend that keeps every frame it is sent, declaring `native` as its pixel format."""

    native = "I420"
    sent: ClassVar[list[tuple[str, np.ndarray]]] = []

    def __init__(self, *, width: int, height: int, fps: float, fourcc: int, device: str | None, **kw: object):
        self.fourcc = decode_fourcc(fourcc)
        RecordingCamera.sent = []

    def close(self) -> None:
        pass

    def send(self, frame: np.ndarray) -> None:
        RecordingCamera.sent.append((self.fourcc, frame.copy()))

    def device(self) -> str:
        return "recorder"

    def native_fourcc(self) -> int:
        return encode_fourcc(PixelFormat[self.native].value)


@pytest.fixture
def recorder() -> Iterator[type[RecordingCamera]]:
    # The real v4l2loopback backend is tried first and fails here, exactly as on a machine without the module.
    pyvirtualcam.register_backend("recorder", RecordingCamera)
    yield RecordingCamera
    del pyvirtualcam.camera.BACKENDS["recorder"]


def test_virtual_camera_gets_every_demo_frame_in_its_native_format(recorder: type[RecordingCamera]) -> None:
    config = RunConfig(SourceConfig.parse("demo", fps=None), OutputConfig())
    pipeline = assemble(config, StageTimes())
    pipeline.source.frame_count = 12  # the demo runs until stopped when sent to a camera; stop it early
    result = pipeline.run()
    assert result.frames == 12
    formats = {fourcc for fourcc, _ in recorder.sent}
    assert formats == {"I420"}, "frames are sent in the backend's native format"
    w, h = pipeline.source.size
    from livemood.live.demo import Portrait

    portrait = Portrait((w, h))
    fresh = [f for _, f in recorder.sent][: result.frames]
    for i, sent in enumerate(fresh[:3]):
        back = cv2.cvtColor(sent.reshape(h * 3 // 2, w), cv2.COLOR_YUV2BGR_I420)
        assert np.abs(back.astype(int) - portrait.render(i / pipeline.source.fps)).mean() < 3


@pytest.mark.parametrize("fmt", ["BGR", "RGB", "RGBA", "GRAY", "I420", "NV12", "YUYV", "UYVY"])
def test_pixel_format_conversions_round_trip(fmt: str, media: Path) -> None:
    bgr = read_frames(media / "talk_d.mp4", 1)[0]
    out = to_pixel_format(bgr, PixelFormat[fmt])
    h, w = bgr.shape[:2]
    back = {
        "BGR": lambda: out,
        "RGB": lambda: cv2.cvtColor(out, cv2.COLOR_RGB2BGR),
        "RGBA": lambda: cv2.cvtColor(out, cv2.COLOR_RGBA2BGR),
        "GRAY": lambda: cv2.cvtColor(out, cv2.COLOR_GRAY2BGR),
        "I420": lambda: cv2.cvtColor(out.reshape(h * 3 // 2, w), cv2.COLOR_YUV2BGR_I420),
        "NV12": lambda: cv2.cvtColor(out.reshape(h * 3 // 2, w), cv2.COLOR_YUV2BGR_NV12),
        "YUYV": lambda: cv2.cvtColor(out.reshape(h, w, 2), cv2.COLOR_YUV2BGR_YUYV),
        "UYVY": lambda: cv2.cvtColor(out.reshape(h, w, 2), cv2.COLOR_YUV2BGR_UYVY),
    }[fmt]()
    bytes_per_pixel = {"BGR": 3, "RGB": 3, "RGBA": 4, "GRAY": 1, "I420": 1.5, "NV12": 1.5}.get(fmt, 2)
    assert out.size == bytes_per_pixel * w * h
    # Grey drops colour by design: compare it with the frame's own grey version.
    expected = cv2.cvtColor(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR) if fmt == "GRAY" else bgr
    assert back.shape == bgr.shape
    assert np.abs(back.astype(int) - expected).mean() < 3


def test_virtual_camera_error_names_the_fix_when_no_backend_works() -> None:
    from livemood.config import UsageError

    with pytest.raises(UsageError, match="--output"):
        VirtualCameraSink((640, 480), 30.0, backend="v4l2loopback")


class StopAfter(Sink):
    """Records what it gets and presses Ctrl-C after `n` frames."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.images: list[np.ndarray] = []

    def send(self, image: np.ndarray, time_s: float) -> None:
        self.images.append(image)
        if len(self.images) == self.n:
            raise KeyboardInterrupt


def test_camera_path_through_opencv_drops_old_frames_and_repeats_on_failure(media: Path) -> None:
    clip = media / "talk_e.mp4"  # 200 frames, played as a live camera: OpenCV reads as fast as it decodes
    source = CameraSource(str(clip), fps=100.0)
    assert source.live and source.size == (512, 512)
    sink = StopAfter(260)  # more ticks than the file has frames: the file ends, the "camera" fails and reconnects
    result = Pipeline(source, PassthroughEngine(), [sink], ControlState(Controls()), StageTimes(), paced=True).run()
    assert result.interrupted and len(sink.images) == 260
    assert result.dropped > 0, "a camera faster than the pipeline loses its old frames at the source"
    assert result.repeated > 0, "while the camera reconnects the last frame is sent again"
    assert not source._thread.is_alive(), "Ctrl-C joined the capture thread"
    assert all(img.shape == (512, 512, 3) for img in sink.images)


def test_camera_that_does_not_open_is_a_usage_error() -> None:
    from livemood.config import UsageError

    with pytest.raises(UsageError, match="camera 99"):
        CameraSource(99)
