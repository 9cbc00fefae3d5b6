"""Live microphone capture: 16 kHz mono blocks stamped on the pipeline clock.

PortAudio (through sounddevice) calls `Microphone._callback` on its own thread for every device block; the
callback only copies the samples into a fixed ring and notes when they were captured. `read()` runs on the
consumer's thread: it takes everything captured so far, turns the stamps into one smooth timeline, and
resamples from the device's rate to 16 kHz. Nothing is dropped unless the consumer falls `ring_s` behind.
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

log = logging.getLogger(__name__)

DEFAULT_RING_S = 8.0  # s of device audio the ring holds while the consumer is busy
DEFAULT_LATENCY = "low"  # PortAudio's latency hint: small device blocks keep the stamps tight


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
        self._stream = None
        try:
            self._stream = sd.InputStream(
                device=info["index"],
                channels=1,
                samplerate=self.rate,
                dtype="float32",
                latency=latency,
                callback=self._callback,
            )
            self._latency_s = float(self._stream.latency)  # s from capture to the callback, PortAudio's estimate
            self._stream.start()
        except sd.PortAudioError as e:
            if self._stream is not None:
                self._stream.close()
            raise AudioUnavailable(f"cannot open microphone {self.device_name!r}: {e}") from e
        log.info("microphone %r at %.0f Hz, input latency %.1f ms", self.device_name, self.rate, 1e3 * self._latency_s)

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        # PortAudio's own ADC times are unreliable through ALSA plugins (they drift), so use the pipeline clock.
        t_first = now() - self._latency_s - frames / self.rate
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
        self._stream.stop()
        self._stream.close()

    def __enter__(self) -> Microphone:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
