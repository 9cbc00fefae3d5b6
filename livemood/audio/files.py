"""Getting speech audio in: whole files and streams resampled to the mel's 16 kHz mono, with their time stamps."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soxr

from livemood.audio.mel import MEL_FPS, SAMPLE_RATE, AudioUnavailable, Timeline


def resample(x: np.ndarray, rate_in: float, rate_out: int = SAMPLE_RATE) -> np.ndarray:
    """Resample a whole mono float signal (soxr, high quality, no delay); returns float32 (N·rate_out/rate_in,)."""
    x = np.asarray(x, dtype=np.float32).reshape(-1)
    if rate_in == rate_out:
        return x.copy()
    return soxr.resample(x, rate_in, rate_out, quality="HQ")


class StreamResampler:
    """Streaming mono resampler (soxr) that also carries block times across the rate change.

    soxr's stream output is delay-compensated: output sample m is input position m · rate_in / rate_out, but it
    is held back until the filter has seen enough input (a few ms). Each output block is stamped from the newest
    input stamp, assuming the input is contiguous; on a gap, `flush` and start again.
    """

    def __init__(self, rate_in: float, rate_out: int = SAMPLE_RATE) -> None:
        self.rate_in = float(rate_in)
        self.rate_out = rate_out
        self._start()

    def _start(self) -> None:
        same = self.rate_in == self.rate_out
        self._stream = None if same else soxr.ResampleStream(self.rate_in, self.rate_out, 1, "float32", "HQ")
        self._n_in = 0  # input samples pushed
        self._n_out = 0  # output samples returned
        self._anchor: tuple[int, float] | None = None  # (input index, time) of the newest stamped input block

    def push(self, samples: np.ndarray, t_start: float) -> tuple[np.ndarray, float]:
        """Resample the next contiguous block; returns (float32 output, time of its first sample). The output
        may be empty while the filter fills."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        self._anchor = (self._n_in, t_start)
        self._n_in += x.size
        out = x.copy() if self._stream is None else self._stream.resample_chunk(x)
        return out, self._take(out.size)

    def flush(self) -> tuple[np.ndarray, float]:
        """Drain the filter at the end of a contiguous stretch (input ends there); ready for a new stretch."""
        if self._stream is None or self._anchor is None:
            out = np.zeros(0, dtype=np.float32)
            t = 0.0 if self._anchor is None else self._time_of_output(self._n_out)
        else:
            out = self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
            t = self._take(out.size)
        self._start()  # a fresh filter state for the next stretch
        return out, t

    def _time_of_output(self, m: int) -> float:
        assert self._anchor is not None
        index, t = self._anchor
        return t + (m * self.rate_in / self.rate_out - index) / self.rate_in

    def _take(self, n: int) -> float:
        t = self._time_of_output(self._n_out)
        self._n_out += n
        return t


def _frame_to_mono(frame) -> np.ndarray:
    """A decoded PyAV AudioFrame as float32 mono (channel mean), whatever its sample format."""
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if not frame.format.is_planar:  # packed: (1, samples·channels) interleaved
        data = data.reshape(-1, channels).T
    if data.dtype.kind == "f":
        data = data.astype(np.float32, copy=False)
    elif data.dtype == np.uint8:
        data = (data.astype(np.float32) - 128.0) / 128.0
    else:
        data = data.astype(np.float32) / float(np.iinfo(data.dtype).max + 1)
    return data.mean(axis=0) if data.shape[0] > 1 else data[0]


def iter_file_audio(path: str | Path) -> Iterator[tuple[np.ndarray, float]]:
    """Decode a media file's first audio track as (16 kHz mono float32 block, start time in s) pairs.

    Times are on the file's presentation timeline (seconds, as a decoded video frame's `frame.time`), so blocks go
    straight into a `MelBuffer` that is asked for windows at video frame times. Decoding is lazy: pull blocks as
    the video advances. Raises AudioUnavailable when the file has no audio track.
    """
    import av  # deferred: only file sources need FFmpeg

    try:
        container = av.open(str(path))
    except (OSError, av.FFmpegError) as e:
        raise AudioUnavailable(f"cannot open {path} for audio: {e}") from e
    with container:
        if not container.streams.audio:
            raise AudioUnavailable(f"{path} has no audio track")
        stream = container.streams.audio[0]
        resampler: StreamResampler | None = None
        expected = 0.0  # time the next decoded frame starts at if contiguous
        for frame in container.decode(stream):
            if frame.samples == 0:
                continue
            x = _frame_to_mono(frame)
            t = expected if frame.time is None else float(frame.time)
            if resampler is None or resampler.rate_in != frame.sample_rate or abs(t - expected) > 0.5 / MEL_FPS:
                if resampler is not None:  # a discontinuity in the file: finish the stretch before it
                    tail, t_tail = resampler.flush()
                    if tail.size:
                        yield tail, t_tail
                resampler = StreamResampler(frame.sample_rate)
                stretch_t0, stretch_n = t, 0
            # Within a stretch, count samples: containers round pts (Matroska to 1 ms), the sample count is exact.
            t = stretch_t0 + stretch_n / frame.sample_rate
            stretch_n += frame.samples
            expected = stretch_t0 + stretch_n / frame.sample_rate
            out, t_out = resampler.push(x, t)
            if out.size:
                yield out, t_out
        if resampler is not None:
            tail, t_tail = resampler.flush()
            if tail.size:
                yield tail, t_tail


def read_audio(path: str | Path) -> tuple[np.ndarray, float]:
    """A media file's whole audio track as 16 kHz mono float32 and the time of its first sample (s, on the file's
    presentation timeline). Discontinuities inside the track are filled with silence."""
    timeline = Timeline(SAMPLE_RATE, max_jitter_s=0.5 / SAMPLE_RATE, max_gap_s=math.inf)  # blocks are exact
    parts: list[np.ndarray] = []
    for block, t in iter_file_audio(path):
        silence, skip = timeline.place(block.size, t)
        if silence:
            parts.append(np.zeros(silence, dtype=np.float32))
        parts.append(block[skip:])
    if timeline.t0 is None:
        raise AudioUnavailable(f"{path} has an audio track with no samples")
    return np.concatenate(parts), timeline.t0
