"""Frame sources: each runs one reader thread that stamps frames and hands them to the pipeline.

Live sources (cameras, streams) keep only their newest frame; files drop nothing and make the reader wait.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from livemood.config import CAMERA_FALLBACK_FPS, UsageError
from livemood.frames import Frame, now
from livemood.live.handoff import Closed, DropPolicy, Handoff
from livemood.live.stats import StageTimes
from livemood.logs import Episode
from livemood.video import VideoReader

log = logging.getLogger(__name__)

FILE_QUEUE = 4  # frames decoded ahead of the pipeline; enough to hide decode jitter
RECONNECT_DELAY_S = (0.25, 2.0)  # first and longest wait between camera reopen attempts
FPS_MEASURE_FRAMES = 60  # frames after which a camera's real frame rate is reported


class Source(ABC):
    """A reader thread producing `Frame`s into a hand-off; `get` takes them in order."""

    live: bool
    size: tuple[int, int]  # (width, height) of every frame this source produces
    fps: float  # nominal frame rate
    frame_count: int | None = None  # frames to expect, when known
    audio_path: Path | None = None  # a file whose audio track belongs to these frames
    time_base: Fraction | None = None  # the exact unit of `Frame.time_s` ticks, when the source has one
    damage: str | None = None  # a file's damage (packets skipped, cut short), one line, once read; None if clean

    def __init__(self, policy: DropPolicy, capacity: int, times: StageTimes | None, stage: str | None) -> None:
        self._handoff: Handoff[Frame] = Handoff(policy, capacity)
        self._times = times
        self._stage = stage
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)

    @abstractmethod
    def _images(self) -> Iterator[tuple[np.ndarray, float]]:
        """Yield (BGR image, time on the source's timeline in s) until the source ends or `_stop` is set."""

    def start(self) -> None:
        self._thread.start()

    def get(self, timeout: float | None = None) -> Frame | None:
        """The next frame, or None after `timeout` s; raises `handoff.Closed` at the end of the source."""
        return self._handoff.get(timeout)

    @property
    def dropped(self) -> int:
        return self._handoff.dropped

    def _run(self) -> None:
        images = self._images()
        try:
            while not self._stop.is_set():
                t0 = now()
                item = next(images, None)
                if item is None:
                    break
                image, time_s = item
                t_capture = now()
                if self._times is not None and self._stage is not None:
                    self._times.add(self._stage, t_capture - t0)
                if not self._handoff.put(Frame(image, t_capture, time_s)):
                    break
        except Exception as e:
            self._handoff.close(e)
        else:
            self._handoff.close()
        finally:
            images.close()

    def close(self) -> None:
        """Stop the reader thread and release the device. Safe to call twice."""
        self._stop.set()
        self._handoff.close()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        self._release()

    def _release(self) -> None:  # noqa: B027 - optional hook
        """Release the underlying device or file."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def opencv_api(target: int | str) -> int:
    """The capture API that opens local cameras fastest per platform (MJPG works on V4L2 and DirectShow)."""
    if isinstance(target, str):
        return cv2.CAP_ANY
    if sys.platform.startswith("linux"):
        return cv2.CAP_V4L2
    if sys.platform == "win32":
        return cv2.CAP_DSHOW
    if sys.platform == "darwin":
        return cv2.CAP_AVFOUNDATION
    return cv2.CAP_ANY


def describe_target(target: int | str) -> str:
    """"camera 0", or "stream rtsp://user:***@host/path" (a password in the address is not shown)."""
    if isinstance(target, int):
        return f"camera {target}"
    return "stream " + re.sub(r"(://[^/@:]*):[^/@]*@", r"\1:***@", target)


class CameraSource(Source):
    """A camera (index) or network stream (URL) read by OpenCV; only the newest frame is kept.

    A read failure is logged once, the pipeline repeats the last good frame, and the device is reopened with
    back-off; the first frame after that is logged as its return. A camera that keeps failing is told again only
    after `logs.QUIET_S`.
    """

    live = True

    def __init__(
        self,
        target: int | str,
        size: tuple[int, int] | None = None,
        fps: float | None = None,
        times: StageTimes | None = None,
    ) -> None:
        super().__init__(DropPolicy.LATEST, 1, times, None)
        self.target = target
        self.name = describe_target(target)  # for every line about it: a stream's password is never logged
        self._request = (size, fps)
        self._cap = self._open()
        ok, first = self._cap.read()
        if not ok or first is None:
            self._cap.release()
            raise UsageError(f"{self.name} opened but gave no frame")
        self._first: np.ndarray | None = first
        self.size = (first.shape[1], first.shape[0])
        reported = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps or (reported if 1 <= reported <= 240 else CAMERA_FALLBACK_FPS)
        self.measured_fps: float | None = None
        self.outage = Episode(log)  # the camera giving no frames, reconnecting
        log.info("%s: %dx%d, pacing at %.3g fps", self.name, *self.size, self.fps)

    def _open(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(self.target, opencv_api(self.target))
        if not cap.isOpened():
            cap.release()
            if isinstance(self.target, str):
                raise UsageError(f"{self.name} could not be opened: it did not answer, or sent "
                                 "no video (check the address, and that the stream is running)")
            raise UsageError(f"{self.name} could not be opened (see `livemood devices`)")
        size, fps = self._request
        if isinstance(self.target, int):
            # Without MJPG many USB cameras fall back to raw YUYV at a low fps for large sizes.
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG"))
        if size is not None:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, size[0])
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, size[1])
        if fps is not None:
            cap.set(cv2.CAP_PROP_FPS, fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # keep the driver from queueing stale frames
        return cap

    def _images(self) -> Iterator[tuple[np.ndarray, float]]:
        first, self._first = self._first, None
        if first is not None:
            yield first, now()
        delay = RECONNECT_DELAY_S[0]
        count, t_count = 0, now()
        while not self._stop.is_set():
            try:
                ok, image = self._cap.read()
            except cv2.error as e:  # some backends raise where others return False: the same lost camera
                ok, image = False, None
                log.debug("%s: %s", self.name, e)
            if ok and image is not None:
                delay = RECONNECT_DELAY_S[0]
                self.outage.end("%s is back", self.name)
                if (image.shape[1], image.shape[0]) != self.size:
                    image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
                count += 1
                if count == FPS_MEASURE_FRAMES:
                    self.measured_fps = count / (now() - t_count)
                    log.info("%s delivers %.1f fps", self.name, self.measured_fps)
                yield image, now()
                continue
            self.outage.start("%s gives no frames; repeating the last one while reconnecting", self.name)
            self._cap.release()
            while not self._stop.wait(delay):
                delay = min(2 * delay, RECONNECT_DELAY_S[1])  # also when it opens but gives nothing again
                try:
                    self._cap = self._open()
                    break
                except UsageError:
                    pass

    def _release(self) -> None:
        self._cap.release()


class FileSource(Source):
    """A media file decoded by PyAV (`livemood.video.VideoReader`); every frame is kept, stamped with its
    presentation time."""

    live = False

    def __init__(self, path: Path, size: tuple[int, int] | None = None, times: StageTimes | None = None) -> None:
        super().__init__(DropPolicy.BLOCK, FILE_QUEUE, times, "decode")
        self.path = path
        self._reader = VideoReader(path, "source", size, warn_damage=False)  # the run reports it (RunResult)
        self.size = self._reader.size
        self.fps = self._reader.fps
        self.frame_count = self._reader.declared_frames
        self.audio_path = path if self._reader.has_audio else None
        self.time_base = self._reader.time_base

    def _images(self) -> Iterator[tuple[np.ndarray, float]]:
        while not self._stop.is_set() and (item := self._reader.read()) is not None:
            yield item

    @property
    def damage(self) -> str | None:
        return self._reader.damage

    def _release(self) -> None:
        self._reader.close()


class ReplaySource(FileSource):
    """A file decoded into memory up front, whose frames are stamped when the pipeline takes them.

    `livemood bench` uses it: like a camera that always has a fresh frame, it makes the measured latency the
    pipeline's own, excluding decoding and any read-ahead queue. At most `max_frames` frames are kept.
    """

    def __init__(self, path: Path, size: tuple[int, int] | None = None, times: StageTimes | None = None,
                 max_frames: int = 600) -> None:
        super().__init__(path, size, times)
        self._frames: list[tuple[np.ndarray, float]] = []
        images = self._images()
        while len(self._frames) < max_frames:
            t0 = now()
            item = next(images, None)
            if item is None:
                break
            if times is not None:
                times.add("decode", now() - t0)
            self._frames.append(item)
        images.close()
        self.frame_count = len(self._frames)
        self._next = 0

    def start(self) -> None:
        pass

    def get(self, timeout: float | None = None) -> Frame | None:
        if self._next >= len(self._frames):
            raise Closed
        image, time_s = self._frames[self._next]
        self._next += 1
        return Frame(image, now(), time_s)
