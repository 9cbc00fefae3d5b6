"""Speech audio → Wav2Lip mel spectrograms: for whole clips, and incrementally for live streams.

The mel recipe is Wav2Lip's exactly (see the shared notes): 16 kHz mono, pre-emphasis 0.97, a centred STFT with
reflect padding (n_fft 800, hop 200, Hann 800), magnitude, an 80-band Slaney mel filterbank over 55-7600 Hz,
20·log10 - 20 dB and a clip to [-4, 4]. That is 80 mel frames per second; a video frame is given the 16 frames
(0.2 s) that start at its time. Everything here is plain numpy at run time (librosa is only the tests' reference).

Audio blocks carry their own time: `t_start` is the first sample's time in seconds on the caller's timeline (the
pipeline clock `livemood.frames.now()` for microphones, the file's presentation timeline for files).
"""

from __future__ import annotations

import enum
import logging
import math

import numpy as np

from livemood import config

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # Hz, Wav2Lip's audio rate
N_FFT = 800  # samples (50 ms) per STFT frame
HOP = 200  # samples (12.5 ms) between mel frames
WIN = 800  # samples, Hann window length (= N_FFT, so no zero padding inside the frame)
N_MELS = 80  # mel bands
FMIN = 55.0  # Hz, lowest mel band edge
FMAX = 7600.0  # Hz, highest mel band edge
PREEMPHASIS = 0.97  # y[n] = x[n] - 0.97 x[n-1]
REF_LEVEL_DB = 20.0  # dB subtracted after 20·log10
MIN_LEVEL_DB = -100.0  # dB mapped to -4 by the normalisation
MAX_ABS_VALUE = 4.0  # normalised mel values lie in [-4, 4]
AMP_FLOOR = 1e-5  # magnitude floor before the log (-100 dB)
MEL_FPS = SAMPLE_RATE / HOP  # 80 mel frames per second
WINDOW_FRAMES = 16  # mel frames per video frame's window (0.2 s)
MEL_SILENCE = -MAX_ABS_VALUE  # the normalised value digital silence maps to

# Mel frame k is centred on sample k·HOP and reads samples [k·HOP - N_FFT/2, k·HOP + N_FFT/2).
_HALF = N_FFT // 2
# Frames that need 17 hops (212.5 ms) of audio after a window's start time before the window's last frame exists:
# 15 hops to the last frame's centre plus 2 hops (half an STFT window) of its right half.
_LOOKAHEAD_FRAMES = WINDOW_FRAMES - 1 + _HALF // HOP
_FRAME_EPS = 1e-6  # mel frames; absorbs float error so a time exactly on a frame boundary lands on it

DEFAULT_HISTORY_S = 4.0  # seconds of mel frames a MelBuffer keeps for late window requests
DEFAULT_MAX_JITTER_S = 0.02  # s; stamp deviations up to this are clock noise, not gaps or overlaps
DEFAULT_MAX_GAP_S = 5.0  # s; longer gaps restart the timeline instead of filling silence
_DRIFT_GAIN = 0.02  # fraction of each small stamp deviation taken into the timeline (tracks clock drift)
_BATCH_FRAMES = 2048  # mel frames per chunk in the batch transform (bounds memory to ~13 MB of float64)


class AudioUnavailable(RuntimeError):
    """No audio can be had (no microphone, no PortAudio, a file without sound): the caller goes video-only."""


class Lookahead(enum.Enum):
    """How the 0.2 s Wav2Lip window, which lies *after* a video frame's time, is obtained live.

    DELAY_VIDEO: the true Wav2Lip window (16 mel frames from the frame's time). Its last frame needs 212.5 ms of
    audio after the frame's time (15 hops to its centre + half an 800-sample STFT window), so video has to be held
    back by that much. This is what the model was trained on, so the mouth matches the voice.
    SHIFT_WINDOW: the window that ends at the frame's time (the DELAY_VIDEO window of a frame 212.5 ms earlier).
    No added latency, but the generated mouth lags the voice by 212.5 ms unless the audio is delayed by as much.
    """

    DELAY_VIDEO = "delay-video"
    SHIFT_WINDOW = "shift-window"

    @property
    def shift_frames(self) -> int:
        """Mel frames the window is moved into the past."""
        return _LOOKAHEAD_FRAMES if self is Lookahead.SHIFT_WINDOW else 0

    @property
    def added_latency_ms(self) -> float:
        """How long video must wait after a frame's time until its window can be computed, in ms."""
        return 1000.0 * (_LOOKAHEAD_FRAMES - self.shift_frames) / MEL_FPS


# Default: lip sync is the product. DELAY_VIDEO costs 212.5 ms, which keeps a call conversational (one-way delays
# up to ~400 ms are usable; ITU-T G.114), whereas SHIFT_WINDOW leaves the mouth 212.5 ms behind the voice, an
# error viewers notice. For files the choice costs nothing: all of the audio is there before the video.
DEFAULT_LOOKAHEAD = Lookahead(config.DEFAULT_LOOKAHEAD)


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear (3 bands per 200 Hz) below 1 kHz, logarithmic (27 bands per factor 6.4) above."""
    f = np.asarray(f, dtype=np.float64)
    log_step = math.log(6.4) / 27.0
    return np.where(f < 1000.0, f * 3.0 / 200.0, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / log_step)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    log_step = math.log(6.4) / 27.0
    return np.where(m < 15.0, m * 200.0 / 3.0, 1000.0 * np.exp(log_step * (m - 15.0)))


def mel_filterbank() -> np.ndarray:
    """(N_MELS, N_FFT // 2 + 1) triangular filters on the Slaney mel scale, each scaled to unit area (Slaney norm)."""
    fft_hz = np.linspace(0.0, SAMPLE_RATE / 2.0, N_FFT // 2 + 1)
    # N_MELS + 2 edges equally spaced in mel: band i rises from edge i to i+1 and falls to i+2.
    edges = _mel_to_hz(np.linspace(_hz_to_mel(FMIN), _hz_to_mel(FMAX), N_MELS + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (fft_hz[None, :] - lower) / (centre - lower)
    falling = (upper - fft_hz[None, :]) / (upper - centre)
    bank = np.maximum(0.0, np.minimum(rising, falling))
    return bank * (2.0 / (upper - lower))  # area normalisation: every band sums to the same energy


_MEL_BASIS_T = np.ascontiguousarray(mel_filterbank().T)  # (401, 80) float64, for (T, 401) @ (401, 80)
_HANN = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(WIN) / WIN)  # periodic Hann, as scipy/librosa use for STFT


def _preemphasis(x: np.ndarray, previous: float) -> np.ndarray:
    """Pre-emphasis of one block given the raw sample before it (0 at a stream's start, as lfilter does)."""
    y = np.empty_like(x)
    y[0] = x[0] - PREEMPHASIS * previous
    np.subtract(x[1:], PREEMPHASIS * x[:-1], out=y[1:])
    return y


def _frames_to_mel(padded: np.ndarray, n_frames: int) -> np.ndarray:
    """(n_frames, N_MELS) float32 normalised mel of frames k = 0.. reading padded[k·HOP : k·HOP + N_FFT]."""
    frames = np.lib.stride_tricks.as_strided(
        padded, shape=(n_frames, N_FFT), strides=(padded.strides[0] * HOP, padded.strides[0]), writeable=False
    )
    magnitude = np.abs(np.fft.rfft(frames * _HANN, axis=1))  # (n_frames, 401)
    mel = magnitude @ _MEL_BASIS_T  # (n_frames, 80)
    db = 20.0 * np.log10(np.maximum(AMP_FLOOR, mel)) - REF_LEVEL_DB
    scaled = (2.0 * MAX_ABS_VALUE) * (db - MIN_LEVEL_DB) / -MIN_LEVEL_DB - MAX_ABS_VALUE
    return np.clip(scaled, -MAX_ABS_VALUE, MAX_ABS_VALUE).astype(np.float32)


def _padded_to_mel(padded: np.ndarray) -> np.ndarray:
    """All frames of an already centre-padded pre-emphasised signal, (T, N_MELS), in memory-bounded chunks."""
    n_frames = max(0, (len(padded) - N_FFT) // HOP + 1)
    out = np.empty((n_frames, N_MELS), dtype=np.float32)
    for first in range(0, n_frames, _BATCH_FRAMES):
        count = min(_BATCH_FRAMES, n_frames - first)
        out[first : first + count] = _frames_to_mel(padded[first * HOP :], count)
    return out


def melspectrogram(wav: np.ndarray) -> np.ndarray:
    """Wav2Lip's mel spectrogram of a whole clip.

    `wav` is mono 16 kHz audio (float, about [-1, 1]), shape (N,). Returns (80, 1 + N // 200) float32 in [-4, 4];
    frame k is centred on sample 200·k.
    """
    x = np.asarray(wav, dtype=np.float64).reshape(-1)
    if x.size == 0:
        return np.zeros((N_MELS, 0), dtype=np.float32)
    y = _preemphasis(x, 0.0)
    padded = np.pad(y, _HALF, mode="reflect")  # librosa 0.7's centring: reflect, not zeros
    return np.ascontiguousarray(_padded_to_mel(padded).T)


def mel_window(mel: np.ndarray, frame_index: int, fps: float) -> np.ndarray:
    """The (80, 16) window Wav2Lip gives video frame `frame_index` of a clip at `fps`.

    It starts at mel frame int(frame_index · (80 / fps)) (Wav2Lip's own float order); past the end of the clip the
    last 16 frames are used.
    """
    n_frames = mel.shape[1]
    if n_frames < WINDOW_FRAMES:
        raise ValueError(f"need at least {WINDOW_FRAMES} mel frames, got {n_frames}")
    start = int(frame_index * (MEL_FPS / fps))
    start = min(start, n_frames - WINDOW_FRAMES)
    return mel[:, start : start + WINDOW_FRAMES]


class Timeline:
    """Places stamped blocks on one continuous sample timeline: sample n is at t0 + n / rate.

    Stamps within `max_jitter_s` of where the block should start are clock noise: the block is contiguous, and a
    small fraction of the deviation moves t0 so slow drift between the audio and the caller's clock is followed.
    A later stamp is a gap (lost audio), filled with that much silence; an earlier one overlaps audio already
    placed, and the overlapping samples are dropped. A gap longer than `max_gap_s` or a jump back by more than it
    (a file looped, a device restarted) restarts the timeline at the new stamp after at most `max_gap_s` of
    silence, so memory and work stay bounded.
    """

    def __init__(self, rate: float, max_jitter_s: float, max_gap_s: float) -> None:
        self.rate = float(rate)
        self.max_jitter_s = max_jitter_s
        self.max_gap_s = max_gap_s
        self.t0: float | None = None
        self.n = 0  # samples placed so far (including filled silence)

    def time_of(self, n: float) -> float:
        """Time of sample index `n` (fractional allowed); requires at least one placed block."""
        assert self.t0 is not None
        return self.t0 + n / self.rate

    def place(self, n_samples: int, t_start: float) -> tuple[int, int]:
        """Reconcile a block of `n_samples` stamped `t_start`; returns (silence to insert before it, samples of it
        to drop from its start). Advances the timeline by what is kept."""
        if self.t0 is None:
            self.t0 = t_start
            self.n = n_samples
            return 0, 0
        deviation = t_start - self.time_of(self.n)
        silence = skip = 0
        if abs(deviation) <= self.max_jitter_s:
            self.t0 += _DRIFT_GAIN * deviation
        elif self.max_jitter_s < deviation <= self.max_gap_s:
            silence = round(deviation * self.rate)
            self.t0 += deviation - silence / self.rate
        elif -self.max_gap_s <= deviation < 0:
            skip = min(n_samples, round(-deviation * self.rate))
        else:
            log.info("audio timeline jumped by %.3f s: restarting it", deviation)
            silence = round(self.max_gap_s * self.rate) if deviation > 0 else 0
            self.t0 = t_start - (self.n + silence) / self.rate
        self.n += silence + n_samples - skip
        return silence, skip


class MelBuffer:
    """Rolling Wav2Lip mel spectrogram of a live or file audio stream, computed incrementally.

    `push` blocks of 16 kHz mono audio with their start times; only the mel frames the new samples complete are
    computed (the STFT overlap and the pre-emphasis state are carried between blocks), and `history_s` of frames
    are kept. `window(t)` gives the (80, 16) window for a video frame at time `t` on the same timeline as the
    stamps. Frames equal `melspectrogram` of the same samples, except the last two, which the batch transform
    pads by reflection at the clip's end: `finish()` adds that padding when a file's audio ends, after which
    windows past the end are the last 16 frames, as in Wav2Lip. Gaps and overlaps are handled by `Timeline`.
    """

    def __init__(
        self,
        lookahead: Lookahead = DEFAULT_LOOKAHEAD,
        history_s: float = DEFAULT_HISTORY_S,
        max_jitter_s: float = DEFAULT_MAX_JITTER_S,
        max_gap_s: float = DEFAULT_MAX_GAP_S,
    ) -> None:
        if history_s * MEL_FPS < WINDOW_FRAMES + _LOOKAHEAD_FRAMES:
            raise ValueError(f"history_s must hold at least one window, got {history_s:g} s")
        self.lookahead = lookahead
        self._history = math.ceil(history_s * MEL_FPS)  # mel frames kept
        self._rows = np.empty((2 * self._history, N_MELS), dtype=np.float32)  # (frames, 80), compacted when full
        self._max_jitter_s = max_jitter_s
        self._max_gap_s = max_gap_s
        self.reset()

    def reset(self) -> None:
        """Forget all audio: the next block starts a new stream (as after a seek)."""
        self._timeline = Timeline(SAMPLE_RATE, self._max_jitter_s, self._max_gap_s)
        self._previous = 0.0  # last raw sample, for pre-emphasis across blocks
        self._head = np.zeros(0)  # pre-emphasised samples before the first N_FFT/2 + 1 (the left pad needs them)
        self._tail: np.ndarray | None = None  # centre-padded samples from frame `_next`'s first sample on
        self._next = 0  # index of the next mel frame to compute
        self._base = 0  # frame index of self._rows[0]
        self._count = 0  # valid rows in self._rows
        self._finished = False

    @property
    def added_latency_ms(self) -> float:
        """Extra video delay this buffer's look-ahead needs, in ms (microphone block latency comes on top)."""
        return self.lookahead.added_latency_ms

    @property
    def n_frames(self) -> int:
        """Mel frames computed so far since the stream (re)started."""
        return self._next

    @property
    def t_end(self) -> float | None:
        """Time just after the last sample pushed; None before any audio."""
        return None if self._timeline.t0 is None else self._timeline.time_of(self._timeline.n)

    def push(self, samples: np.ndarray, t_start: float) -> int:
        """Add a block of 16 kHz mono samples whose first sample is at `t_start` s; returns new mel frames."""
        if self._finished:
            raise RuntimeError("MelBuffer.push after finish(); call reset() to start a new stream")
        x = np.asarray(samples, dtype=np.float64).reshape(-1)
        if x.size == 0:
            return 0
        before = self._next
        silence, skip = self._timeline.place(x.size, t_start)
        if silence:
            self._feed(np.zeros(silence))
        if skip < x.size:
            self._feed(x[skip:])
        return self._next - before

    def finish(self) -> None:
        """End of the stream (a file's audio ended): compute the last frames with the batch transform's reflect
        padding. Later windows past the end are the last 16 frames."""
        if self._finished:
            return
        self._finished = True
        if self._tail is None:  # under N_FFT/2 + 1 samples in all: do it as one batch
            if self._head.size:
                padded = np.pad(self._head, _HALF, mode="reflect")
                self._store(_padded_to_mel(padded))
            return
        # The right pad mirrors the last samples about the final one, excluding it: y[N-2], y[N-3], ...
        self._tail = np.concatenate([self._tail, self._tail[-2 : -2 - _HALF : -1]])
        self._compute()

    def frame_start(self, t: float) -> int:
        """Index of the first mel frame of the window for a video frame at `t` (this buffer's look-ahead)."""
        if self._timeline.t0 is None:
            raise RuntimeError("no audio yet")
        start = math.floor((t - self._timeline.t0) * MEL_FPS + _FRAME_EPS) - self.lookahead.shift_frames
        if self._finished:
            start = min(start, self._next - WINDOW_FRAMES)
        return start

    def window(self, t: float) -> np.ndarray | None:
        """(80, 16) float32 window for a video frame at time `t`, or None when it is not available: no audio yet,
        its audio has not all arrived (live: ask again later), or it is older than the kept history. Frames
        before the stream's first sample are silence (-4)."""
        if self._timeline.t0 is None:
            return None
        start = self.frame_start(t)
        end = start + WINDOW_FRAMES
        if end > self._next:
            return None
        first = max(start, 0)  # frames before the stream's start are silence
        if first < self._base:
            log.debug("mel window at %.3f s is older than the kept history", t)
            return None
        window = np.full((N_MELS, WINDOW_FRAMES), MEL_SILENCE, dtype=np.float32)  # (80, 16)
        if end > first:
            window[:, first - start :] = self._rows[first - self._base : end - self._base].T
        return window

    def _feed(self, x: np.ndarray) -> None:
        y = _preemphasis(x, self._previous)
        self._previous = float(x[-1])
        if self._tail is None:
            self._head = np.concatenate([self._head, y])
            if self._head.size <= _HALF:
                return
            # Left centre pad by reflection, as the batch transform: y[400], y[399], ..., y[1].
            self._tail = np.concatenate([self._head[_HALF:0:-1], self._head])
            self._head = np.zeros(0)
        else:
            self._tail = np.concatenate([self._tail, y])
        self._compute()

    def _compute(self) -> None:
        assert self._tail is not None
        n_new = (self._tail.size - N_FFT) // HOP + 1
        if n_new <= 0:
            return
        self._store(_padded_to_mel(self._tail[: (n_new - 1) * HOP + N_FFT]))
        self._tail = self._tail[n_new * HOP :].copy()  # keep only the overlap the next frames need (< N_FFT)

    def _store(self, mel_rows: np.ndarray) -> None:
        # Invariant: self._base + self._count == self._next (rows hold the newest frames).
        n_new = mel_rows.shape[0]
        self._next += n_new
        if n_new >= self._history:  # one long block fills the whole history
            self._rows[: self._history] = mel_rows[-self._history :]
            self._base, self._count = self._next - self._history, self._history
            return
        if self._count + n_new > self._rows.shape[0]:  # compact: move the newest frames to the front
            keep = min(self._count, self._history - n_new)
            self._rows[:keep] = self._rows[self._count - keep : self._count]
            self._base += self._count - keep
            self._count = keep
        self._rows[self._count : self._count + n_new] = mel_rows
        self._count += n_new
