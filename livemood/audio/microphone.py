"""Live microphone capture: 16 kHz mono blocks stamped on the pipeline clock.

PortAudio (through sounddevice) calls `Microphone._callback` on its own thread for every device block; the
callback only copies the samples into a fixed ring and notes when they were captured. `read()` runs on the
consumer's thread: it takes everything captured so far, turns the stamps into one smooth timeline, and
resamples from the device's rate to 16 kHz. Nothing is dropped unless the consumer falls `ring_s` behind.
A watchdog thread notices a device that stops delivering (unplugged, its PulseAudio source gone) and reopens it
with back-off, so the consumer never waits on a device.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

import numpy as np

from livemood.audio.files import StreamResampler
from livemood.audio.mel import SAMPLE_RATE, AudioUnavailable
from livemood.audio.portaudio import ClockAnchor, load_sounddevice, resolve_device
from livemood.frames import now
from livemood.logs import Episode

log = logging.getLogger(__name__)

DEFAULT_RING_S = 8.0  # s of device audio the ring holds while the consumer is busy
DEFAULT_LATENCY = "low"  # PortAudio's latency hint: small device blocks keep the stamps tight
SILENT_S = 1.5  # s without a device block before the microphone counts as lost (blocks come every ~10 ms;
# 0.2 s gaps are common under load, and PulseAudio moving a stream to another source pauses it ~1 s)
FIRST_BLOCK_S = 5.0  # s a newly opened stream may take for its first block (PulseAudio through ALSA: 1-2 s)
WATCH_S = 0.1  # s between the watchdog's checks
REOPEN_S = (0.5, 4.0)  # first and longest wait between reopen attempts of a lost microphone


class Microphone:
    """A live microphone as 16 kHz mono float32 blocks stamped with their first sample's capture time.

    `device` is a PortAudio index, a (part of a) device name, or None for the default input. The device runs at
    its own default rate (always supported) and is resampled here. Stamps are on `livemood.frames.now()`: the
    callback's time minus the block's duration and PortAudio's input latency, smoothed by `ClockAnchor` so they
    advance exactly with the sample count. Raises AudioUnavailable when there is no PortAudio or no such device.
    """

    def __init__(
        self,
        device: int | str | None = None,
        ring_s: float = DEFAULT_RING_S,
        latency: str | float = DEFAULT_LATENCY,
    ) -> None:
        sd = load_sounddevice()
        info = resolve_device(sd, device, "input")
        self.device_name: str = info["name"]
        self.rate = float(info["default_samplerate"])  # Hz, the device's rate
        capacity = int(ring_s * self.rate)
        self._ring = np.zeros(capacity, dtype=np.float32)  # device-rate mono, allocated once
        self._write = 0  # samples ever written into the ring
        self._read = 0  # samples ever read out of it
        self._blocks: deque[tuple[int, int, float, bool]] = deque()  # (first index, count, raw time, kept)
        self._captured = 0  # device samples delivered, dropped ones included: the stamps' sample index
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.overflows = 0  # device blocks dropped because the ring was full
        self.device_overflows = 0  # blocks PortAudio reported lost before they reached us
        self._warned = False
        self._anchor = ClockAnchor()
        self._anchored = 0  # sample index of the latest anchor reading
        self._resampler = StreamResampler(self.rate, SAMPLE_RATE)
        self._closed = False
        self._sd, self._index, self._latency = sd, info["index"], latency
        self._last_block = 0.0  # pipeline-clock time of the latest device block; 0 before the first
        self.outage = Episode(log)  # the device delivering nothing
        self._stream: Any | None = self._open_stream()
        self._opened = now()
        log.info("microphone %r at %.0f Hz, input latency %.1f ms", self.device_name, self.rate, 1e3 * self._latency_s)
        self._stop = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name="microphone-watchdog", daemon=True)
        self._watchdog.start()

    def _open_stream(self) -> Any:
        """A started PortAudio input stream on the device; raises AudioUnavailable if it cannot open."""
        sd, stream = self._sd, None
        try:
            stream = sd.InputStream(
                device=self._index,
                channels=1,
                samplerate=self.rate,
                dtype="float32",
                latency=self._latency,
                callback=self._callback,
            )
            self._latency_s = float(stream.latency)  # s from capture to the callback, PortAudio's estimate
            stream.start()
        except sd.PortAudioError as e:
            if stream is not None:
                stream.close()
            raise AudioUnavailable(f"cannot open microphone {self.device_name!r}: {e}") from e
        return stream

    def _watch(self) -> None:
        """Reopen the stream while the device delivers nothing; runs on its own thread until `close`."""
        delay, reopen_at = REOPEN_S[0], 0.0
        while not self._stop.wait(WATCH_S):
            t = now()
            heard = self._last_block > self._opened  # a block since the stream was (re)opened
            quiet_since, limit = (self._last_block, SILENT_S) if heard else (self._opened, FIRST_BLOCK_S)
            if self._stream is not None and self._stream.active and t - quiet_since <= limit:
                if heard:
                    delay = REOPEN_S[0]
                    self.outage.end("microphone %r is back", self.device_name)
                continue
            if self.outage.start("microphone %r gives no audio; reopening it (video goes on without it)",
                                 self.device_name):
                reopen_at = t  # the first attempt at once
            if t >= reopen_at:
                reopen_at, delay = t + delay, min(2 * delay, REOPEN_S[1])
                self._reopen()

    def _reopen(self) -> None:
        old, self._stream = self._stream, None
        if old is not None:
            try:
                old.abort()
                old.close()
            except self._sd.PortAudioError as e:  # a lost device may fail to close: it is replaced anyway
                log.debug("closing the lost microphone stream: %s", e)
        with self._lock:  # a gap: the samples before and after it are not one stretch
            self._blocks.append((self._captured, 0, now(), False))
        try:
            self._stream = self._open_stream()
        except AudioUnavailable as e:
            log.debug("%s", e)
        self._opened = now()

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        # PortAudio's own ADC times are unreliable through ALSA plugins (they drift), so use the pipeline clock.
        t_first = now() - self._latency_s - frames / self.rate
        self._last_block = now()
        if status.input_overflow:
            self.device_overflows += 1
        with self._lock:
            first = self._captured
            self._captured += frames
            capacity = self._ring.size
            if self._write - self._read + frames > capacity:
                self.overflows += 1
                if self._blocks and not self._blocks[-1][3]:  # merge consecutive drops into one gap
                    start, count, t_raw, _ = self._blocks[-1]
                    self._blocks[-1] = (start, count + frames, t_raw, False)
                else:
                    self._blocks.append((first, frames, t_first, False))
            else:
                at = self._write % capacity
                n1 = min(frames, capacity - at)
                self._ring[at : at + n1] = indata[:n1, 0]
                self._ring[: frames - n1] = indata[n1:, 0]
                self._write += frames
                self._blocks.append((first, frames, t_first, True))
        self._ready.set()

    def read(self, timeout: float = 0.0) -> list[tuple[np.ndarray, float]]:
        """Everything captured since the last read, as (16 kHz mono float32 samples, first sample's time) blocks:
        one block per contiguous stretch (more only after an overflow). Waits up to `timeout` s for audio; returns
        [] when there is none."""
        if not self._ready.wait(timeout):
            return []
        with self._lock:
            self._ready.clear()
            blocks = list(self._blocks)
            self._blocks.clear()
            n = self._write - self._read
            at = self._read % self._ring.size
            samples = np.concatenate([self._ring[at : at + n], self._ring[: max(0, at + n - self._ring.size)]])
            self._read = self._write
        if self.overflows and not self._warned:
            self._warned = True
            log.warning(
                "microphone ring overflowed (consumer more than %.1f s behind): audio dropped",
                self._ring.size / self.rate,
            )
        out: list[tuple[np.ndarray, float]] = []
        offset = 0
        for first, count, t_raw, kept in blocks:
            if not kept:  # a gap: finish the stretch before it; the next stamp shows the gap
                self._emit(out, *self._resampler.flush())
                continue
            elapsed = (first - self._anchored) / self.rate
            self._anchored = first
            t_start = self._anchor.update(t_raw - first / self.rate, elapsed) + first / self.rate
            self._emit(out, *self._resampler.push(samples[offset : offset + count], t_start))
            offset += count
        return out

    @staticmethod
    def _emit(out: list[tuple[np.ndarray, float]], block: np.ndarray, t: float) -> None:
        if not block.size:
            return
        if out:  # join with the previous block when it continues it exactly
            previous, t_previous = out[-1]
            if abs(t_previous + previous.size / SAMPLE_RATE - t) < 0.5 / SAMPLE_RATE:
                out[-1] = (np.concatenate([previous, block]), t_previous)
                return
        out.append((block, t))

    def close(self) -> None:
        """Stop capturing; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._watchdog is not threading.current_thread():
            self._watchdog.join()
        if self._stream is not None:
            self._stream.stop()
            self._stream.close()

    def __enter__(self) -> Microphone:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
