"""Frame sinks: the virtual camera, a video file (with the source's audio), a preview window, or nothing."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pyvirtualcam
from pyvirtualcam import PixelFormat

from livemood.atomic import AtomicFile, cannot_write
from livemood.config import RunError, UsageError
from livemood.frames import now
from livemood.live.encoders import add_video_stream, audio_encoder, audio_rate
from livemood.logs import Episode

log = logging.getLogger(__name__)

WINDOW_TITLE = "livemood"
LIVE_TIME_BASE = Fraction(1, 90000)  # seconds per tick for files written from live sources (MPEG convention)
CAMERA_REOPEN_S = (0.25, 2.0)  # first and longest wait between virtual camera reopen attempts
CAMERA_GIVE_UP_S = 10.0  # a virtual camera failing this long is gone for good: the run stops (RunError, exit 1)


class Sink:
    """Receives output frames, (H, W, 3) uint8 BGR, with their time on the source timeline in seconds."""

    live = False  # a live sink is fed at a steady rate by the pipeline's clock

    def send(self, image: np.ndarray, time_s: float) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Finish normally. Safe to call twice."""

    def abort(self) -> None:
        """Stop after a failure or an interrupt; leave nothing half-written."""
        self.close()


class ProgressSink(Sink):
    """A progress bar for long file jobs (shown only on a terminal)."""

    def __init__(self, total: int | None, desc: str) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=total, unit="frame", desc=desc, disable=None, leave=False)

    def send(self, image: np.ndarray, time_s: float) -> None:
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()


Progress = Callable[[int, int | None], None]  # (frames written so far, frames the source expects or None)


class CallbackSink(Sink):
    """Calls `on_frame(done, total)` after each frame is written: progress for scripts (`livemood.edit`).

    `total` is the frames the source expects (None when unknown). An exception from `on_frame` stops the run and
    nothing is written: that is how a script cancels.
    """

    def __init__(self, on_frame: Progress, total: int | None) -> None:
        self._on_frame = on_frame
        self._total = total
        self._done = 0

    def send(self, image: np.ndarray, time_s: float) -> None:
        self._done += 1
        self._on_frame(self._done, self._total)


class NullSink(Sink):
    """Discards frames: `livemood bench` measures the pipeline without any encoder."""

    def send(self, image: np.ndarray, time_s: float) -> None:
        pass


def to_pixel_format(bgr: np.ndarray, fmt: PixelFormat) -> np.ndarray:
    """Convert a BGR frame to a pyvirtualcam PixelFormat's layout (planar YUV formats are BT.601 limited range)."""
    name = fmt.name
    if name == "BGR":
        return bgr
    if name == "RGB":
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if name == "RGBA":
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGBA)
    if name == "GRAY":
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    h, w = bgr.shape[:2]
    i420 = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420).reshape(-1)  # Y plane, then U, then V quarter planes
    if name == "I420":
        return i420
    y, u, v = i420[: w * h], i420[w * h : w * h * 5 // 4], i420[w * h * 5 // 4 :]
    if name == "NV12":
        out = np.empty_like(i420)
        out[: w * h] = y
        out[w * h :: 2], out[w * h + 1 :: 2] = u, v
        return out
    if name in ("YUYV", "UYVY"):
        # 4:2:2 packed as (h, w/2, 4) macro-pixels; each 4:2:0 chroma row serves two image rows.
        out = np.empty((h, w // 2, 4), np.uint8)
        yi, ui, vi = (0, 1, 3) if name == "YUYV" else (1, 0, 2)
        yy = y.reshape(h, w // 2, 2)
        out[..., yi], out[..., yi + 2] = yy[..., 0], yy[..., 1]
        for row in (0, 1):
            out[row::2, :, ui] = u.reshape(h // 2, w // 2)
            out[row::2, :, vi] = v.reshape(h // 2, w // 2)
        return out.reshape(-1)
    raise ValueError(f"no conversion to pixel format {name}")


CONVERTIBLE = ("BGR", "RGB", "RGBA", "GRAY", "I420", "NV12", "YUYV", "UYVY")
HOW_TO_GET_A_CAMERA = {
    "linux": "install v4l2loopback and run `sudo modprobe v4l2loopback devices=1 exclusive_caps=1 "
    'card_label="livemood"` (exclusive_caps=1 makes Chrome list it)',
    "win32": "install OBS Studio (26 or newer) and start its virtual camera once",
    "darwin": "install OBS Studio (30 or newer) and start its virtual camera once to register it",
}


class VirtualCameraSink(Sink):
    """pyvirtualcam output in the backend's native pixel format, so the backend converts nothing.

    A send that fails is logged once; the camera is closed and reopened with back-off while frames are skipped (the
    pipeline and its other sinks go on), and its return is logged. One that stays failed for `give_up_s` raises
    RunError.
    """

    live = True

    def __init__(self, size: tuple[int, int], fps: float, device: str | None = None,
                 backend: str | None = None, give_up_s: float = CAMERA_GIVE_UP_S) -> None:
        self._args = dict(width=size[0], height=size[1], fps=fps, device=device, backend=backend)
        self.give_up_s = give_up_s
        self.outage = Episode(log)
        self._reopen_at = 0.0  # pipeline-clock time of the next reopen attempt while failed
        self._delay = CAMERA_REOPEN_S[0]
        self._error = ""  # the last failure, for the give-up message
        self._cam: pyvirtualcam.Camera | None = self._open(PixelFormat.BGR)
        native = self._cam.native_fmt
        if native is not None and native.name != "BGR" and native.name in CONVERTIBLE:
            if native.name in ("I420", "NV12", "YUYV", "UYVY") and (size[0] % 2 or size[1] % 2):
                log.info("virtual camera: odd frame size, sending BGR instead of %s", native.name)
            else:
                self._cam.close()
                self._cam = self._open(native)
        self.fmt = self._cam.fmt
        self.device = self._cam.device
        log.info("virtual camera: %s on %s, %dx%d @ %g fps, sending %s",
                 self._cam.backend, self._cam.device, size[0], size[1], fps, self.fmt.name)

    def _open(self, fmt: PixelFormat) -> pyvirtualcam.Camera:
        try:
            return pyvirtualcam.Camera(fmt=fmt, **self._args)
        except RuntimeError as e:
            hint = HOW_TO_GET_A_CAMERA.get(sys.platform, "install a virtual camera (OBS Studio or v4l2loopback)")
            raise UsageError(
                f"no virtual camera is available ({' | '.join(str(e).splitlines())}).\n"
                f"  To get one: {hint}.\n"
                "  Or write a file with --output out.mp4, or watch with --preview."
            ) from e

    def send(self, image: np.ndarray, time_s: float) -> None:
        if self._cam is None and not self._reopen():
            return
        assert self._cam is not None
        try:
            self._cam.send(to_pixel_format(image, self.fmt))
        except Exception as e:  # the backend's own errors vary (RuntimeError, OSError): all mean the same here
            self._failed(e)
            return
        self.outage.end("virtual camera %s works again", self.device)

    def _failed(self, e: Exception) -> None:
        self._error = " | ".join(str(e).splitlines()) or type(e).__name__
        if self.outage.start("virtual camera %s failed (%s); reopening it", self.device, self._error):
            self._delay = CAMERA_REOPEN_S[0]
        self._drop_camera()
        self._reopen_at = now() + self._delay
        self._delay = min(2 * self._delay, CAMERA_REOPEN_S[1])

    def _reopen(self) -> bool:
        """One reopen attempt once its back-off has passed; raises RunError once failing for `give_up_s`."""
        t = now()
        if self.outage.since is not None and t - self.outage.since >= self.give_up_s:
            raise RunError(f"the virtual camera {self.device} failed ({self._error}) and did not come back within "
                           f"{self.give_up_s:.0f} s")
        if t < self._reopen_at:
            return False
        try:
            self._cam = pyvirtualcam.Camera(fmt=self.fmt, **self._args)
        except Exception as e:
            self._failed(e)
            return False
        return True

    def _drop_camera(self) -> None:
        cam, self._cam = self._cam, None
        if cam is not None:
            try:
                cam.close()
            except Exception as e:  # closing what already failed: its error was told
                log.debug("closing the failed virtual camera: %s", e)

    def close(self) -> None:
        self._drop_camera()


class PreviewSink(Sink):
    """An OpenCV window; a key pressed while a frame is shown goes to `on_key` as its `cv2.waitKey` code."""

    def __init__(self, on_key: Callable[[int], None] | None = None) -> None:
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise UsageError("--preview needs a display (DISPLAY is not set)")
        cv2.namedWindow(WINDOW_TITLE, cv2.WINDOW_NORMAL)
        self._on_key = on_key
        self._open = True

    def send(self, image: np.ndarray, time_s: float) -> None:
        if self._open:
            cv2.imshow(WINDOW_TITLE, image)
            code = cv2.waitKey(1)  # also lets the window draw; -1 when no key was pressed
            if code >= 0 and self._on_key is not None:
                self._on_key(code)

    def close(self) -> None:
        if self._open:
            self._open = False
            cv2.destroyWindow(WINDOW_TITLE)


class FileSink(Sink):
    """Writes every frame it gets to a video file, with `audio_from`'s audio track copied unchanged (or, where the
    container does not take it, encoded in the container's own audio codec).

    Frames keep their source timestamps. The file is written under a unique hidden name in the same folder and
    renamed by `close` (`livemood.atomic`), so an aborted run leaves no half file and a file already at `path` stays
    as it was. A write that fails (a full disk, a read-only folder) raises RunError with one line; a container that
    cannot hold the video raises UsageError.
    """

    def __init__(self, path: Path, size: tuple[int, int], fps: float, audio_from: Path | None = None,
                 time_base: Fraction = LIVE_TIME_BASE) -> None:
        self.path = path
        self.frames = 0
        self._last_pts = -1
        self._audio_in: av.container.InputContainer | None = None
        self._audio_out: av.audio.AudioStream | None = None
        self._encode_audio = False  # True: the source's sound is decoded and encoded again, not copied
        self._packets: Iterator[av.Packet] = iter(())
        self._pending: av.Packet | None = None
        self._out: av.container.OutputContainer | None = None
        try:
            self._file = AtomicFile(path)
        except OSError as e:
            raise cannot_write(path, e) from e
        try:
            self._out = av.open(str(self._file.tmp), "w")
            self._video = add_video_stream(self._out, size, fps, time_base)
            self._time_base = self._video.codec_context.time_base  # frames are stamped in ticks of this, seconds
            if audio_from is not None:
                self._open_audio(audio_from)
            self._out.start_encoding()  # writes the header now: an unsupported codec fails before any work
        except OSError as e:  # av.error.OSError is one too: the disk, not the request
            self.abort()
            raise cannot_write(path, e) from e
        except (av.error.FFmpegError, ValueError) as e:
            reason = self._refusal(e)
            self.abort()
            raise UsageError(f"cannot write {path}: {reason}") from e

    def _refusal(self, error: Exception) -> str:
        """Why the container cannot be written, in the user's terms (not the temporary file's name)."""
        if self._out is None:  # av.open found no format for the extension
            return f"no video format has the extension {self.path.suffix}"
        if isinstance(error, av.error.FFmpegError):  # the muxer refused the streams when writing the header
            streams = " and ".join(f"{s.codec_context.name} {s.type}" for s in self._out.streams)
            return f"the {self._out.format.name} format does not take {streams} ({error.strerror})"
        return str(error)

    def _open_audio(self, source: Path) -> None:
        assert self._out is not None
        self._audio_in = av.open(str(source))
        if not self._audio_in.streams.audio:
            self._close_audio_in()
            return
        stream = self._audio_in.streams.audio[0]
        try:
            self._audio_out = self._out.add_stream_from_template(stream)
        except ValueError:  # PyAV's check: the container does not take this codec (AAC into WebM)
            codec = audio_encoder(self._out)
            if codec is None:
                log.info("a %s file has no sound: the audio of %s is left out", self.path.suffix, source.name)
                self._close_audio_in()
                return
            log.info("%s takes no %s sound: encoding the audio as %s", self.path.suffix, stream.codec_context.name,
                     codec.name)
            self._audio_out = self._out.add_stream(codec.name, rate=audio_rate(codec, stream.rate),
                                                   layout=stream.layout.name)
            self._encode_audio = True
        self._packets = (p for p in self._audio_in.demux(stream) if p.dts is not None)

    def _mux_audio_until(self, time_s: float | None) -> None:
        """Copy (or encode) the source's audio packets that start before `time_s` (all of them for None)."""
        assert self._out is not None
        while True:
            packet = self._pending or next(self._packets, None)
            self._pending = None
            if packet is None:
                break
            if time_s is not None and packet.pts is not None and float(packet.pts * packet.time_base) > time_s:
                self._pending = packet
                return
            if self._encode_audio:
                for frame in packet.decode():
                    self._out.mux(self._audio_out.encode(frame))
            else:
                packet.stream = self._audio_out
                self._out.mux(packet)
        if self._encode_audio:
            self._out.mux(self._audio_out.encode(None))  # the encoder's last samples
            self._encode_audio = False

    def send(self, image: np.ndarray, time_s: float) -> None:
        assert self._out is not None
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        # Source times map to ticks exactly; a repeated or out-of-order time is nudged to keep pts increasing.
        pts = max(round(time_s / self._time_base), self._last_pts + 1)
        frame.pts, frame.time_base = pts, self._time_base
        self._last_pts = pts
        try:
            self._mux_audio_until(time_s)
            self._out.mux(self._video.encode(frame))
        except OSError as e:
            raise cannot_write(self.path, e) from e
        self.frames += 1

    def close(self) -> None:
        if self._out is None:
            return
        try:
            self._out.mux(self._video.encode(None))
            self._mux_audio_until(None)
            self._finish()
            self._file.commit()
        except OSError as e:
            self.abort()
            raise cannot_write(self.path, e) from e
        except BaseException:  # an interrupt while finishing: nothing is kept either
            self.abort()
            raise
        log.info("wrote %s (%d frames)", self.path, self.frames)

    def abort(self) -> None:
        """Close without keeping anything; never raises for the file (it is being thrown away)."""
        try:
            self._finish()
        except (OSError, av.error.FFmpegError):  # the trailer of a file that is deleted next
            pass
        finally:
            self._file.discard()

    def _finish(self) -> None:
        out, self._out = self._out, None
        try:
            if out is not None:
                out.close()
        finally:
            self._close_audio_in()

    def _close_audio_in(self) -> None:
        audio_in, self._audio_in = self._audio_in, None
        if audio_in is not None:
            audio_in.close()
