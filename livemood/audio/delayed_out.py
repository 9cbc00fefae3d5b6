"""Delayed audio out: the microphone's voice, played late by the pipeline's video latency, so it stays in sync.

Method: the microphone's stamped 16 kHz samples go into a ring indexed by their capture time. For every sample
the output is about to play, the ideal source position is "its play time minus the delay". The read position
follows that ideal with a playback rate within ±2 % of 1 (linear interpolation between samples), so a change of
the delay is slewed at up to 20 ms per second: no discontinuity, and a pitch change of at most a third of a
semitone while it lasts. Errors under 2 ms are left alone (stamp noise); there the read position eases onto
whole samples, so steady playback is the input unfiltered. Only changes over `JUMP_S` (which would take
seconds to slew) jump, with a short crossfade between the old and the new position. The 16 kHz result is
resampled (soxr) to the device's rate.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any

import numpy as np
import soxr

from livemood.audio.mel import DEFAULT_MAX_JITTER_S, SAMPLE_RATE, AudioUnavailable, Timeline
from livemood.audio.portaudio import ClockAnchor, load_sounddevice, resolve_device
from livemood.frames import now

log = logging.getLogger(__name__)

DEFAULT_BUFFER_S = 10.0  # s of input kept: the longest usable delay
MAX_RATE_DEVIATION = 0.02  # playback-rate change allowed while slewing: 2 % (20 ms of delay per second)
SLEW_TIME_CONSTANT_S = 0.25  # s; a delay error decays this fast (until the rate limit caps it)
DEAD_BAND_S = 0.002  # s; delay errors this small are left alone (stamp noise; far below lip-sync perception)
SNAP_RATE = 1e-3  # rate change used to move the read position onto whole samples inside the dead band
JUMP_S = 0.1  # s; delay errors above this jump with a crossfade instead of slewing
CROSSFADE_S = 0.02  # s, length of that crossfade
DEFAULT_OUT_LATENCY = "high"  # PortAudio's hint; the delay hides the output buffer anyway


class DelayLine:
    """Device-independent core of DelayedAudioOut: stamped 16 kHz samples in, delayed samples at `out_rate` out.

    `write` and `render` may be called from different threads.
    """

    def __init__(self, delay_s: float, out_rate: float, buffer_s: float = DEFAULT_BUFFER_S) -> None:
        self.out_rate = float(out_rate)
        self._capacity = int(buffer_s * SAMPLE_RATE)
        self._ring = np.zeros(self._capacity, dtype=np.float32)  # 16 kHz input by absolute index % capacity
        self._timeline = Timeline(SAMPLE_RATE, DEFAULT_MAX_JITTER_S, buffer_s)
        self._lock = threading.Lock()
        self._resampler = (
            None
            if self.out_rate == SAMPLE_RATE
            else soxr.ResampleStream(SAMPLE_RATE, self.out_rate, 1, "float32", "HQ")
        )
        self._fifo = np.zeros(0, dtype=np.float32)  # out_rate samples produced but not yet played
        self._generated = 0  # 16 kHz samples produced; sample g plays at output frame g · out_rate / 16000
        self._emitted = 0  # output frames handed to the device
        self._position: float | None = None  # fractional input index read for the next 16 kHz sample
        self._applied_s = math.nan  # delay actually applied by the latest render
        self.underruns = 0  # renders that wanted audio that had not arrived yet
        self.delay_s = delay_s

    @property
    def delay_s(self) -> float:
        """Target delay in s between a sample's capture time and the time it is heard."""
        return self._delay_s

    @delay_s.setter
    def delay_s(self, value: float) -> None:
        limit = self._capacity / SAMPLE_RATE - 0.5  # keep half a second of margin in the ring
        if not 0.0 <= value <= limit:
            raise ValueError(f"delay must be between 0 and {limit:g} s, got {value:g}")
        self._delay_s = float(value)

    @property
    def applied_delay_s(self) -> float:
        """The delay being applied now (it trails the target while slewing); NaN before audio plays."""
        return self._applied_s

    @property
    def emitted(self) -> int:
        """Output frames rendered so far."""
        return self._emitted

    def write(self, samples: np.ndarray, t_start: float) -> None:
        """Add 16 kHz mono samples whose first one was captured at `t_start` (pipeline clock, s)."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        if not x.size:
            return
        with self._lock:
            first = self._timeline.n
            silence, skip = self._timeline.place(x.size, t_start)
            self._put(first, np.zeros(silence, dtype=np.float32))
            self._put(first + silence, x[skip:])

    def _put(self, first: int, x: np.ndarray) -> None:
        if x.size > self._capacity:
            first, x = first + x.size - self._capacity, x[-self._capacity :]
        index = (first + np.arange(x.size)) % self._capacity
        self._ring[index] = x

    def render(self, n_frames: int, t_play: float) -> np.ndarray:
        """The next `n_frames` output samples (float32, out_rate); the first is heard at `t_play` (s)."""
        chunks = [self._fifo]
        have = self._fifo.size
        while have < n_frames:
            # Time at which the next 16 kHz sample will be heard, from the fixed 16 kHz ↔ output frame mapping.
            t_next = t_play + (self._generated * self.out_rate / SAMPLE_RATE - self._emitted) / self.out_rate
            wanted = max(math.ceil((n_frames - have) * SAMPLE_RATE / self.out_rate) + 16, 64)
            block = self._generate(wanted, t_next)
            if self._resampler is not None:
                block = self._resampler.resample_chunk(block)
            chunks.append(block)
            have += block.size
        out = np.concatenate(chunks)
        self._fifo = out[n_frames:].copy()
        self._emitted += n_frames
        return out[:n_frames]

    def _generate(self, n: int, t_first: float) -> np.ndarray:
        """At least n samples at 16 kHz (more while a crossfade runs), the first heard at t_first."""
        with self._lock:
            if self._timeline.t0 is None:  # nothing captured yet
                self._generated += n
                return np.zeros(n, dtype=np.float32)
            ideal = (t_first - self._delay_s - self._timeline.t0) * SAMPLE_RATE  # input index to read now
            if self._position is None:
                self._position = ideal
            start = self._position
            error = ideal - start  # samples; > 0: we play too late a delay → read faster
            if abs(error) > JUMP_S * SAMPLE_RATE:
                log.info("audio delay jumps by %.0f ms", -1e3 * error / SAMPLE_RATE)
                n = max(n, round(CROSSFADE_S * SAMPLE_RATE))  # the whole crossfade in this block
                steps = np.arange(n)
                fade = np.clip(steps / (CROSSFADE_S * SAMPLE_RATE), 0.0, 1.0)
                old = self._read(start + steps)
                out = (1.0 - fade) * old + fade * self._read(ideal + steps)
                self._position = ideal + n
            else:
                steps = np.arange(n)
                if abs(error) > DEAD_BAND_S * SAMPLE_RATE:  # proportional: rate - 1 = error / time constant
                    outside = math.copysign(abs(error) - DEAD_BAND_S * SAMPLE_RATE, error)
                    slew = outside / (SLEW_TIME_CONSTANT_S * SAMPLE_RATE)
                    rate = 1.0 + float(np.clip(slew, -MAX_RATE_DEVIATION, MAX_RATE_DEVIATION))
                else:  # stamp noise: keep the rate at 1, easing onto whole samples (no interpolation filter)
                    rate = 1.0 + float(np.clip((round(start) - start) / n, -SNAP_RATE, SNAP_RATE))
                out = self._read(start + rate * steps)
                self._position = start + rate * n
            self._generated += n
            self._applied_s = t_first - self._timeline.time_of(start)
            return out.astype(np.float32)

    def _read(self, positions: np.ndarray) -> np.ndarray:
        """Linear interpolation at fractional input indices; silence where there is no input (yet or any more)."""
        base = np.floor(positions).astype(np.int64)
        frac = positions - base
        written = self._timeline.n
        valid = (base >= max(0, written - self._capacity)) & (base + 1 < written)
        if not valid[-1] and base[-1] + 1 >= written and written > 0:
            self.underruns += 1
        a = self._ring[base % self._capacity]
        b = self._ring[(base + 1) % self._capacity]
        return np.where(valid, a + frac * (b - a), 0.0)


class DelayedAudioOut:
    """Plays stamped 16 kHz audio (the microphone's blocks) on an output device, `delay_s` after its capture.

    Set `delay_s` to the pipeline's measured video latency whenever it changes; the playout slews to it (see the
    module's docstring). The device runs at its default rate (or `rate`). Raises AudioUnavailable when there is
    no PortAudio or no such output device.
    """

    def __init__(
        self,
        device: int | str | None = None,
        delay_s: float = 0.25,
        rate: float | None = None,
        buffer_s: float = DEFAULT_BUFFER_S,
        latency: str | float = DEFAULT_OUT_LATENCY,
    ) -> None:
        sd = load_sounddevice()
        info = resolve_device(sd, device, "output")
        self.device_name: str = info["name"]
        self.rate = float(rate or info["default_samplerate"])
        self.line = DelayLine(delay_s, self.rate, buffer_s)
        self._anchor = ClockAnchor()
        self.device_underflows = 0  # PortAudio reported the device ran dry
        self._closed = False
        self._stream = None
        try:
            self._stream = sd.OutputStream(
                device=info["index"],
                channels=1,
                samplerate=self.rate,
                dtype="float32",
                latency=latency,
                callback=self._callback,
            )
            self._latency_s = float(self._stream.latency)  # s from the callback to the speaker, PortAudio's estimate
            self._stream.start()
        except sd.PortAudioError as e:
            if self._stream is not None:
                self._stream.close()
            raise AudioUnavailable(f"cannot open audio output {self.device_name!r}: {e}") from e

    @property
    def delay_s(self) -> float:
        """Target delay in s from capture to playback."""
        return self.line.delay_s

    @delay_s.setter
    def delay_s(self, value: float) -> None:
        self.line.delay_s = value

    def write(self, samples: np.ndarray, t_start: float) -> None:
        """Queue 16 kHz mono samples captured from `t_start` (pipeline clock, s), e.g. a Microphone.read() block."""
        self.line.write(samples, t_start)

    def _callback(self, outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        if status.output_underflow:
            self.device_underflows += 1
        emitted = self.line.emitted
        # Frame `emitted` plays after what is already queued in the device: about one output latency from now.
        t_zero = self._anchor.update(now() + self._latency_s - emitted / self.rate, frames / self.rate)
        outdata[:, 0] = self.line.render(frames, t_zero + emitted / self.rate)

    def close(self) -> None:
        """Stop playing; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        self._stream.stop()
        self._stream.close()

    def __enter__(self) -> DelayedAudioOut:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
