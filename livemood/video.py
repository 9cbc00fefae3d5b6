"""Video files, decoded with PyAV: the one reader that file sources, evaluation and training all use."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from livemood.config import UsageError

log = logging.getLogger(__name__)

# Frames per second assumed when a stream states no rate: the rate of Wav2Lip's and MEAD's talking-face videos.
FALLBACK_FPS = 25.0
# FFmpeg demuxers and decoders that draw text (ANSI art, .txt, .nfo) as pictures: a text file is not a video.
TEXT_FORMATS = frozenset({"tty", "bin", "xbin", "adf", "idf"})
TEXT_CODECS = frozenset({"ansi", "bintext", "xbin", "idf"})
# Packets in a row that may fail before the rest of a file counts as unreadable: more than x264's default keyframe
# interval (250), so that decoding reaches the next keyframe after a damaged stretch.
MAX_BAD_PACKETS_IN_A_ROW = 300
# Without a frame count, a file whose frames end this much (s, or this share of it) before its declared duration
# counts as cut short.
DURATION_SLACK_S, DURATION_SLACK_SHARE = 1.0, 0.1


class VideoReader:
    """One video file decoded frame by frame as BGR, upright; counts every frame it hands out.

    `size` (width, height) scales every frame to that size. `role` names the file in error messages ("source",
    "output", …). A rotation the file asks players for (a phone's display matrix) is applied: frames and `size` are
    as a viewer sees them, upright; `coded_size` is the pictures' size as stored.

    Damage never raises once the file is open: packets that cannot be demuxed or decoded are skipped (after
    `MAX_BAD_PACKETS_IN_A_ROW` of them in a row decoding stops), and a file that ends before the frames or
    duration it declares counts as cut short. `damage` then says so in one line, which is also logged as a warning
    when the reader closes unless `warn_damage` is False (the caller reports it).
    Raises UsageError when the file is missing, unreadable, a text file, has no video stream or no decodable frame.
    """

    def __init__(self, path: Path, role: str = "source", size: tuple[int, int] | None = None,
                 warn_damage: bool = True) -> None:
        if not path.exists():
            raise UsageError(f"{role} file not found: {path}")
        if not path.is_file():
            raise UsageError(f"{role} is not a file: {path}")
        try:
            self._container = av.open(str(path))
        except av.error.InvalidDataError as e:
            raise UsageError(f"cannot read {role} {path}: not a video (FFmpeg does not recognise its format)") from e
        except PermissionError as e:
            raise UsageError(f"cannot read {role} {path}: {e.strerror}") from e
        except (av.error.FFmpegError, OSError, ValueError) as e:
            why = getattr(e, "strerror", None) or str(e)
            raise UsageError(f"cannot read {role} {path}: not a video, or its header is damaged (FFmpeg: {why})") from e
        self.path = path
        self._role = role
        try:
            self._check_is_video()
        except UsageError:
            self._container.close()
            raise
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"  # frame-threaded decoding
        self.fps = float(self._stream.average_rate or self._stream.guessed_rate or Fraction(FALLBACK_FPS))
        self.time_base: Fraction | None = self._stream.time_base
        self.declared_frames: int | None = self._stream.frames or None  # container metadata, may be absent or wrong
        audio = self._container.streams.audio
        self.has_audio = bool(audio) and audio[0].codec_context is not None  # a damaged header can leave it unusable
        self._audio_unreadable = bool(audio) and not self.has_audio
        self._declared_end_s = self._end_declared()
        self.count = 0  # frames handed out so far
        self.skipped = 0  # packets that could not be demuxed or decoded
        self._bad_in_a_row = 0
        self._packets_read = 0
        self._last_end_s: float | None = None  # where the last packet read ends on the file's timeline
        self._ended: str | None = None  # None while reading; "end" at the file's end, else why decoding stopped
        self._warn_damage = warn_damage
        self._packets: Iterator[av.Packet] = self._container.demux(self._stream)
        self._decoded: deque[av.VideoFrame] = deque()
        first = self._decode_next()  # the first frame tells the rotation, and that there is a picture at all
        if first is None:
            self._container.close()
            raise UsageError(f"{role} {path} has no frame that can be decoded (damaged, or not a video)")
        self._decoded.appendleft(first)
        # VideoFrame.rotation: degrees counter-clockwise that turn the coded picture upright (np.rot90's sense).
        self._turns = round(first.rotation / 90) % 4
        self.rotation = 90 * self._turns  # counter-clockwise degrees applied to every frame
        self.coded_size = (first.width, first.height)  # as stored, before turning
        sideways = self._turns % 2 == 1
        self.size = size or ((first.height, first.width) if sideways else self.coded_size)
        self._decode_size = (self.size[1], self.size[0]) if sideways else self.size  # before turning
        if self._turns:
            turn = ("90° anticlockwise", "180°", "90° clockwise")[self._turns - 1]
            log.info("%s %s is stored turned (a rotation tag): its frames are turned %s to stand upright", role,
                     path.name, turn)

    def _check_is_video(self) -> None:
        formats = set((self._container.format.name if self._container.format else "").split(","))
        streams = self._container.streams.video
        codec = streams[0].codec_context if streams else None
        if formats & TEXT_FORMATS or (codec is not None and codec.name in TEXT_CODECS):
            raise UsageError(f"{self._role} {self.path} is a text file, not a video")
        if not streams:
            raise UsageError(f"{self._role} {self.path} has no video stream")
        if codec is None:
            raise UsageError(f"{self._role} {self.path}: its video cannot be decoded (an unknown codec, or a damaged "
                             "header)")

    def _end_declared(self) -> float | None:
        """Where the video ends on the file's timeline by the stream's (else the file's) stated duration, in s."""
        stream, container = self._stream, self._container
        if stream.duration is not None and stream.time_base is not None:
            return float((stream.duration + (stream.start_time or 0)) * stream.time_base)
        if container.duration is not None:
            return (container.duration + (container.start_time or 0)) / av.time_base
        return None

    def read(self) -> tuple[np.ndarray, float] | None:
        """The next (H, W, 3) uint8 BGR frame, upright, and its time on the file's timeline in s, or None at the
        end. A frame without a presentation time is placed at its index / fps."""
        frame = self._next_frame()
        if frame is None:
            return None
        if (frame.width, frame.height) != self._decode_size:  # scaled, or a damaged stream changed its size
            frame = frame.reformat(width=self._decode_size[0], height=self._decode_size[1])
        time_s = float(frame.time) if frame.time is not None else (self.count - 1) / self.fps
        image = frame.to_ndarray(format="bgr24")
        if self._turns:
            image = np.ascontiguousarray(np.rot90(image, self._turns))
        return image, time_s

    def count_rest(self) -> int:
        """Decode (without converting) the remaining frames, so that `count` covers the whole video."""
        while self._next_frame() is not None:
            pass
        return self.count

    @property
    def damage(self) -> str | None:
        """One line on what was wrong with the file so far (cut short, decoding stopped, packets skipped), or None
        while it reads cleanly."""
        short = self._cut_short()
        stopped = self._ended not in (None, "end")
        if short is None and not stopped and not self.skipped and not self._audio_unreadable:
            return None
        if short is not None:
            head = (f"ended early (the file is cut short, or was cut while being read): {self.count} frames read, "
                    f"{short}")
        elif stopped:
            head = f"is damaged: decoding stopped at {self._ended}: {self.count} frames read"
        else:
            head = f"is damaged: {self.count} frames read"
        problems = [f"{self._role} {self.path} {head}"]
        if self.skipped:
            problems.append(f"{self.skipped} damaged packet{'s' * (self.skipped != 1)} skipped")
        if self._audio_unreadable:
            problems.append("its audio track cannot be read (left out)")
        return "; ".join(problems)

    def _cut_short(self) -> str | None:
        """How much more the file declares ("of the 175 its index lists"), if its end came before that; else None
        (also while it is still being read)."""
        if self._ended != "end":
            return None
        if self.declared_frames is not None:
            if self._packets_read < self.declared_frames:
                return f"of the {self.declared_frames} its index lists"
            return None
        duration = self._declared_end_s
        if duration is None or self._last_end_s is None:
            return None
        if self._last_end_s < duration - max(DURATION_SLACK_S, DURATION_SLACK_SHARE * duration):
            return f"up to {self._last_end_s:.1f} s of the {duration:.1f} s it declares"
        return None

    def _next_frame(self) -> av.VideoFrame | None:
        frame = self._decode_next()
        if frame is not None:
            self.count += 1
        return frame

    def _decode_next(self) -> av.VideoFrame | None:
        """The next decoded frame, skipping what cannot be read; None at the end (or where decoding stopped)."""
        while not self._decoded:
            if self._ended is not None:
                return None
            packet = self._demux_next()
            if packet is None and self._ended is not None:  # decoding stopped
                return None
            try:
                frames = self._stream.decode(packet)  # None flushes: the frames the decoder still holds come out
            except av.error.FFmpegError as e:
                self._bad(e)
                frames = []
            if packet is None:
                self._ended = "end"
            elif frames:
                self._bad_in_a_row = 0
            for frame in frames:
                if frame.time_base is None:  # the flushed frames do not get it
                    frame.time_base = self._stream.time_base
            self._decoded.extend(frames)
        return self._decoded.popleft()

    def _demux_next(self) -> av.Packet | None:
        """The next packet with data; None at the file's end (flush the decoder) or when reading stopped."""
        while self._ended is None:
            try:
                packet = next(self._packets, None)
            except av.error.FFmpegError as e:
                self._bad(e)
                self._packets = self._container.demux(self._stream)  # go on from where the demuxer is
                continue
            if packet is None:
                return None
            if packet.size == 0:  # PyAV's own flush packet at the end
                continue
            self._packets_read += 1
            if packet.pts is not None and packet.time_base is not None:
                self._last_end_s = float((packet.pts + (packet.duration or 0)) * packet.time_base)
            if packet.is_corrupt:  # the demuxer knows it is damaged (e.g. cut off by the end of the file)
                self._bad(None)
                continue
            return packet
        return None

    def _bad(self, error: av.error.FFmpegError | None) -> None:
        """Count an unreadable packet; too many in a row stop decoding."""
        self.skipped += 1
        self._bad_in_a_row += 1
        log.debug("%s %s: packet skipped after %d frames: %s", self._role, self.path, self.count,
                  error or "marked corrupt")
        if self._bad_in_a_row >= MAX_BAD_PACKETS_IN_A_ROW and self._ended is None:
            self._ended = f"{self._bad_in_a_row} unreadable packets in a row"

    def close(self) -> None:
        self._container.close()
        if self._warn_damage and (damage := self.damage) is not None:
            self._warn_damage = False
            log.warning("%s", damage)

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
