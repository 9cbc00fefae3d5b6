"""Live-mode faults: a camera lost and back, a virtual camera failing once and for good, the engine and the
tracker raising. Video keeps flowing (output stamps within 100 ms, see GAP_S), each fault is logged once and its
recovery too. The camera is OpenCV reading a file; the virtual camera a recording pyvirtualcam backend (this
machine has no v4l2loopback). The microphone's faults are in test_microphone.py, with its PulseAudio server.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np
import pytest
import pyvirtualcam

from livemood.config import Controls, RunError
from livemood.controls import ControlState
from livemood.engines import PassthroughEngine
from livemood.face.tracker import FaceTracker
from livemood.frames import now
from livemood.live.pipeline import Pipeline
from livemood.live.sinks import Sink, VirtualCameraSink
from livemood.live.sources import CameraSource
from livemood.live.stats import StageTimes
from livemood.live.watch import FACE_LOST_AFTER_S, FaceWatch

from .conftest import read_frames
from .test_files import FailingEngine
from .test_live import RecordingCamera

# Output stamps (s) must follow each other within GAP_S (a frame every 40 ms at 25 fps). A loaded 2-core machine
# (load 8 here, tests niced) delays an odd tick to 100-150 ms: 95 % of gaps keep to GAP_S and none passes
# FREEZE_S, far under the seconds a stage waiting on a lost device would freeze the picture.
GAP_S, FREEZE_S = 0.1, 0.3


class Stamps(Sink):
    """Keeps every frame's output stamp and image; ends the run (like Ctrl-C) once `until()` holds."""

    def __init__(self, until: Callable[[], bool]) -> None:
        self.times: list[float] = []
        self.images: list[np.ndarray] = []
        self._until = until

    def send(self, image: np.ndarray, time_s: float) -> None:
        self.times.append(time_s)
        self.images.append(image)
        if self._until():
            raise KeyboardInterrupt

    def assert_flowing(self) -> None:
        gaps = np.diff(self.times)
        assert np.percentile(gaps, 95) < GAP_S and gaps.max() < FREEZE_S, f"gaps: {sorted(gaps)[-5:]}"


def messages(caplog: pytest.LogCaptureFixture, *parts: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if any(p in r.getMessage() for p in parts)]


def run_live(source: CameraSource, sinks: list[Sink], **kw: object) -> object:
    return Pipeline(source, kw.pop("engine", PassthroughEngine()), sinks, ControlState(Controls()), StageTimes(),
                    paced=True, **kw).run()  # type: ignore[arg-type]


def test_camera_lost_and_back_keeps_video_flowing(media: Path, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    clip = tmp_path / "camera.mp4"
    clip.symlink_to(media / "talk_e.mp4")
    source = CameraSource(str(clip), fps=25.0)
    clip.rename(tmp_path / "away.mp4")  # OpenCV reads on to the file's end, then cannot reopen it: lost
    t_start = now()

    def bring_back() -> None:
        (tmp_path / "away.mp4").rename(clip)

    timer = threading.Timer(1.5, bring_back)
    timer.start()
    sink = Stamps(until=lambda: (not source.outage.active and source.outage.count > 0) or now() - t_start > 20)
    with caplog.at_level(logging.INFO, logger="livemood.live.sources"):
        result = run_live(source, [sink])
    timer.cancel()
    assert result.interrupted and now() - t_start < 20, "the camera came back"
    assert result.repeated > 0, "the last frame was sent again while it was away"
    sink.assert_flowing()
    lost = messages(caplog, "gives no frames")
    back = messages(caplog, "is back")
    # OpenCV reads the clip's path as it would a stream's address, and the lines name it so.
    assert len(lost) == 1 and len(back) == 1 and back[0].startswith(f"stream {clip} is back after ")


class FlakyCamera(RecordingCamera):
    """The recording backend, failing its sends while `failing` says so, and its reopening too when
    `refuse_open` (a device removed for good). Keeps what it was sent across reopenings."""

    failing: ClassVar[bool] = False
    refuse_open: ClassVar[bool] = False
    opened: ClassVar[int] = 0
    got: ClassVar[list[np.ndarray]] = []

    def __init__(self, **kw: object) -> None:
        if FlakyCamera.refuse_open:
            raise RuntimeError("/dev/video10: no such device")
        super().__init__(**kw)  # type: ignore[arg-type]
        FlakyCamera.opened += 1

    def send(self, frame: np.ndarray) -> None:
        if FlakyCamera.failing:
            raise RuntimeError("VIDIOC_QBUF: No such device")
        FlakyCamera.got.append(frame)


@pytest.fixture
def flaky() -> Iterator[type[FlakyCamera]]:
    pyvirtualcam.register_backend("flaky", FlakyCamera)
    FlakyCamera.failing = FlakyCamera.refuse_open = False
    FlakyCamera.opened, FlakyCamera.got = 0, []
    yield FlakyCamera
    del pyvirtualcam.camera.BACKENDS["flaky"]


def test_virtual_camera_failing_once_is_reopened(media: Path, flaky: type[FlakyCamera],
                                                 caplog: pytest.LogCaptureFixture) -> None:
    source = CameraSource(str(media / "talk_e.mp4"), fps=25.0)
    camera = VirtualCameraSink(source.size, source.fps, backend="flaky")
    t_start = now()

    class Fault(Sink):  # the backend fails for 0.3 s, from 0.3 s in
        def send(self, image: np.ndarray, time_s: float) -> None:
            FlakyCamera.failing = 0.3 <= now() - t_start < 0.6

    preview = Stamps(until=lambda: now() - t_start > 1.5)
    with caplog.at_level(logging.INFO, logger="livemood.live.sinks"):
        run_live(source, [Fault(), camera, preview])
    preview.assert_flowing()  # the other sinks went on
    assert flaky.opened >= 2, "reopened"
    assert len(flaky.got) > 0.5 * len(preview.times)
    failed, back = messages(caplog, "failed (VIDIOC_QBUF"), messages(caplog, "works again")
    assert len(failed) == 1 and len(back) == 1, caplog.text


def test_virtual_camera_gone_for_good_is_a_run_error(media: Path, flaky: type[FlakyCamera],
                                                     caplog: pytest.LogCaptureFixture) -> None:
    source = CameraSource(str(media / "talk_e.mp4"), fps=25.0)
    camera = VirtualCameraSink(source.size, source.fps, backend="flaky", give_up_s=1.0)
    flaky.failing = flaky.refuse_open = True
    preview = Stamps(until=lambda: False)
    with caplog.at_level(logging.INFO, logger="livemood.live.sinks"), pytest.raises(RunError) as e:
        run_live(source, [camera, preview])
    assert str(e.value).startswith("the virtual camera recorder failed (") and "within 1 s" in str(e.value)
    preview.assert_flowing()
    assert preview.times[-1] > 0.9, "video flowed until it gave up (1 s)"
    assert len(messages(caplog, "failed (")) == 1, "the reopen attempts are not told one by one"


class BrokenTracker(FaceTracker):
    """The real tracker, raising on calls in `bad` (a mediapipe graph error)."""

    def __init__(self, bad: range) -> None:
        super().__init__()
        self.bad, self.calls = bad, 0
        self.seen: list[np.ndarray] = []  # the source frames, as the pipeline holds them

    def track(self, frame_bgr: np.ndarray, timestamp_ms: int) -> object:
        self.calls += 1
        self.seen.append(frame_bgr)
        if self.calls - 1 in self.bad:
            raise RuntimeError("CalculatorGraph::Run() failed:\nmore detail")
        return super().track(frame_bgr, timestamp_ms)


def test_engine_and_tracker_raising_send_raw_frames_and_recover(media: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    source = CameraSource(str(media / "talk_e.mp4"), fps=25.0)
    engine = FailingEngine(range(25, 35))
    engine.needs_face = True  # so the pipeline runs the tracker for it
    tracker = BrokenTracker(range(5, 15))
    sink = Stamps(until=lambda: engine.calls >= 45)
    with caplog.at_level(logging.INFO, logger="livemood.live.pipeline"):
        result = run_live(source, [sink], engine=engine, tracker=tracker)
    assert result.engine_errors == 10 and result.tracker_errors == 10
    sink.assert_flowing()
    # FailingEngine returns new (inverted) frames; a frame sent raw is the source's own array.
    raw = {id(img) for img in sink.images if any(img is frame for frame in tracker.seen)}
    assert len(raw) == 10, "the frames the engine failed on, and only those, went out raw"
    assert messages(caplog, "failed; sending") == [
        "the face tracker failed; sending frames unchanged until it works again (RuntimeError: CalculatorGraph::"
        "Run() failed:)",
        "engine failing failed; sending frames unchanged until it works again (RuntimeError: model exploded)",
    ]
    assert len(messages(caplog, "works again after")) == 2
    assert any("the face tracker failed on 10 of" in m for m in messages(caplog, "failed on"))


def canvas(face: np.ndarray, width: int, size: tuple[int, int] = (640, 360)) -> np.ndarray:
    """A grey (H, W) frame with `face` scaled to `width` px placed in it."""
    out = np.full((size[1], size[0], 3), 90, np.uint8)
    small = cv2.resize(face, (width, width), interpolation=cv2.INTER_AREA)
    h = min(width, size[1])
    out[:h, 100 : 100 + width] = small[:h]
    return out


def test_face_lost_and_found_are_told_once_with_a_hint_when_too_small(media: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    frames = read_frames(media / "talk_a.mp4", 10)
    grey = np.full((360, 640, 3), 90, np.uint8)
    # 0.4 s face, 1.6 s nobody, 1.2 s a face too small (talk_a's face is ~0.43 of the frame: ~24 px of 640),
    # then the face again. Frame times in s, 25 fps.
    sequence = [canvas(f, 360) for f in frames[:10]] + [grey] * 40 + [canvas(frames[0], 140)] * 30 \
        + [canvas(f, 360) for f in frames[:10]]
    with FaceTracker() as tracker, caplog.at_level(logging.INFO, logger="livemood.live.watch"):
        watch = FaceWatch(tracker)
        for i, image in enumerate(sequence):
            watch.update(image, tracker.track(image, i * 40), i / 25)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "no face in view: frames go out unchanged until one is back"
    assert lines[1].startswith("a face ") and "too small to track" in lines[1] and "80 px here" in lines[1]
    assert lines[2].startswith("face found again after ")
    assert len(lines) == 3
    assert float(lines[2].split()[-2]) > FACE_LOST_AFTER_S
