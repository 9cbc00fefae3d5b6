"""Video files, decoded with PyAV: the one reader that file sources, evaluation and training all use."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from livemood.config import UsageError

log = logging.getLogger(__name__)

# Frames per second assumed when a stream states no rate: the rate of Wav2Lip's and MEAD's talking-face videos.
FALLBACK_FPS = 25.0


class VideoReader:
    """One video file decoded frame by frame as BGR; counts every frame it decodes.

    `size` (width, height) scales every frame to that size. `role` names the file in error messages ("source",
    "output", …). With `stop_on_damage`, a decoding error ends the video with a warning instead of raising.
    Raises UsageError when the file is missing, unreadable or has no video stream.
    """

    def __init__(self, path: Path, role: str = "source", size: tuple[int, int] | None = None,
                 stop_on_damage: bool = False) -> None:
        if not path.exists():
            raise UsageError(f"{role} file not found: {path}")
        if not path.is_file():
            raise UsageError(f"{role} is not a file: {path}")
        try:
            self._container = av.open(str(path))
        except (av.error.FFmpegError, OSError, ValueError) as e:
            raise UsageError(f"cannot read {role} {path}: {e}") from e
        if not self._container.streams.video:
            self._container.close()
            raise UsageError(f"{role} {path} has no video stream")
        self.path = path
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"  # frame-threaded decoding
        ctx = self._stream.codec_context
        self.coded_size = (ctx.width, ctx.height)
        self.size = size or self.coded_size
        self._scale = self.size != self.coded_size
        self.fps = float(self._stream.average_rate or self._stream.guessed_rate or Fraction(FALLBACK_FPS))
        self.time_base: Fraction | None = self._stream.time_base
        self.declared_frames: int | None = self._stream.frames or None  # container metadata, may be absent or wrong
        self.has_audio = bool(self._container.streams.audio)
        self.count = 0  # frames decoded so far
        self._stop_on_damage = stop_on_damage
        self._frames = self._container.decode(self._stream)

    def read(self) -> tuple[np.ndarray, float] | None:
        """The next (H, W, 3) uint8 BGR frame and its time on the file's timeline in s, or None at the end.

        A frame without a presentation time is placed at its index / fps."""
        frame = self._next_frame()
        if frame is None:
            return None
        if self._scale:
            frame = frame.reformat(width=self.size[0], height=self.size[1])
        time_s = float(frame.time) if frame.time is not None else (self.count - 1) / self.fps
        return frame.to_ndarray(format="bgr24"), time_s

    def count_rest(self) -> int:
        """Decode (without converting) the remaining frames, so that `count` covers the whole video."""
        while self._next_frame() is not None:
            pass
        return self.count

    def _next_frame(self) -> av.VideoFrame | None:
        try:
            frame = next(self._frames, None)
        except av.error.FFmpegError as e:
            if not self._stop_on_damage:
                raise
            log.warning("decoding %s stopped after %d frames: %s", self.path, self.count, e)
            frame = None
        if frame is not None:
            self.count += 1
        return frame

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
