"""Wav2Lip mel parity with a librosa reference, window indexing, the rolling buffer, resampling and file audio."""

from __future__ import annotations

import fractions
import itertools
import wave
from pathlib import Path

import av
import librosa
import numpy as np
import pytest

from livemood.audio import mel as audio
from livemood.audio.files import StreamResampler, iter_file_audio, read_audio, resample
from livemood.audio.mel import (
    HOP,
    MEL_FPS,
    SAMPLE_RATE,
    WINDOW_FRAMES,
    AudioUnavailable,
    Lookahead,
    MelBuffer,
    mel_filterbank,
    mel_window,
    melspectrogram,
)

MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"
SPEECH = MEDIA / "speech_en_16k.wav"
CLIP = MEDIA / "talk_a.mp4"  # 25 fps, AAC 44.1 kHz stereo
CLIP_16K = MEDIA / "talk_e.mp4"  # 25 fps, AAC 16 kHz stereo
BLOCK_SIZES = (357, 640, 1024)  # samples: odd sizes, none a multiple of the 200-sample hop


def load_speech(seconds: float | None = None) -> np.ndarray:
    with wave.open(str(SPEECH)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (SAMPLE_RATE, 1, 2)
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    x = pcm.astype(np.float32) / 32768.0
    return x if seconds is None else x[: int(seconds * SAMPLE_RATE)]


def librosa_reference(wav: np.ndarray) -> np.ndarray:
    """Wav2Lip's audio.melspectrogram written with librosa calls, with librosa 0.7's reflect centring."""
    y = np.append(wav[:1], wav[1:] - 0.97 * wav[:-1])
    spec = np.abs(librosa.stft(y=y, n_fft=800, hop_length=200, win_length=800, center=True, pad_mode="reflect"))
    mel = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600) @ spec
    db = 20.0 * np.log10(np.maximum(1e-5, mel)) - 20.0
    return np.clip(8.0 * (db + 100.0) / 100.0 - 4.0, -4.0, 4.0)


def push_in_blocks(buffer: MelBuffer, x: np.ndarray, t0: float, sizes=BLOCK_SIZES) -> None:
    position = 0
    for size in itertools.cycle(sizes):
        if position >= x.size:
            break
        buffer.push(x[position : position + size], t0 + position / SAMPLE_RATE)
        position += size


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return load_speech()


@pytest.fixture(scope="module")
def clip_audio() -> tuple[np.ndarray, float]:
    return read_audio(CLIP)


def test_filterbank_matches_librosa_slaney() -> None:
    ours = mel_filterbank()
    ref = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    assert ours.shape == ref.shape == (80, 401)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-8)


def test_mel_matches_reference_on_speech(speech: np.ndarray) -> None:
    ours = melspectrogram(speech)
    ref = librosa_reference(speech)
    assert ours.dtype == np.float32
    assert ours.shape == ref.shape == (80, 1 + speech.size // HOP)
    assert np.abs(ours - ref).max() <= 1e-3
    assert ours.min() >= -4.0 and ours.max() <= 4.0 and ours.std() > 0.5  # real speech, not a flat spectrum


@pytest.mark.parametrize("path", [CLIP, CLIP_16K], ids=lambda p: p.name)
def test_mel_matches_reference_on_clip_audio(path: Path) -> None:
    wav, _ = read_audio(path)
    ours = melspectrogram(wav)
    ref = librosa_reference(wav)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= 1e-3


def test_mel_windows_over_a_whole_clip(clip_audio: tuple[np.ndarray, float]) -> None:
    wav, _ = clip_audio
    with av.open(str(CLIP)) as container:
        video = container.streams.video[0]
        fps = float(video.average_rate)
        n_video = sum(1 for _ in container.decode(video))
    ref = librosa_reference(wav)
    mel = melspectrogram(wav)
    n_mel = mel.shape[1]
    starts = []
    for i in range(n_video):
        window = mel_window(mel, i, fps)
        assert window.shape == (80, WINDOW_FRAMES)
        start = min(int(i * 80 / fps), n_mel - WINDOW_FRAMES)
        starts.append(start)
        assert np.abs(window - ref[:, start : start + WINDOW_FRAMES]).max() <= 1e-3
    assert starts[0] == 0 and starts == sorted(starts)
    assert {b - a for a, b in itertools.pairwise(starts) if b < n_mel - WINDOW_FRAMES} <= {3, 4}  # 3.2 per frame
    # Audio and video are equally long, so only the frames of the last 0.2 s (whose window would run past the
    # audio's end) use the last 16 mel frames.
    assert starts[-1] == n_mel - WINDOW_FRAMES
    assert 1 <= sum(s == n_mel - WINDOW_FRAMES for s in starts) <= round(0.2 * fps) + 1


@pytest.mark.parametrize("lookahead", list(Lookahead))
def test_rolling_buffer_equals_batch(speech: np.ndarray, lookahead: Lookahead, monkeypatch) -> None:
    x = speech[: 12 * SAMPLE_RATE]
    batch = melspectrogram(x)
    computed = []  # frames each STFT call computed: the buffer must never redo old frames
    original = audio._frames_to_mel
    monkeypatch.setattr(audio, "_frames_to_mel", lambda p, n: computed.append(n) or original(p, n))
    buffer = MelBuffer(lookahead=lookahead, history_s=15.0)
    t0 = 5234.125  # a monotonic-clock-like start time
    push_in_blocks(buffer, x, t0)
    assert sum(computed) == buffer.n_frames == batch.shape[1] - 2  # all but the two right-padded frames
    fps = 25.0
    checked = 0
    for i in range(int(12 * fps)):
        window = buffer.window(t0 + i / fps)
        start = int(i * MEL_FPS / fps) - lookahead.shift_frames
        if start + WINDOW_FRAMES > buffer.n_frames:
            assert window is None  # its audio has not arrived
            continue
        expected = batch[:, max(start, 0) : max(start + WINDOW_FRAMES, 0)]
        if start < 0:  # before the stream's first sample: silence
            silent = min(-start, WINDOW_FRAMES)
            assert np.all(window[:, :silent] == -4.0)
            window = window[:, silent:]
        assert window.shape == expected.shape
        assert expected.size == 0 or np.abs(window - expected).max() <= 1e-4
        checked += 1
    assert checked > 280
    buffer.finish()  # the file ended: the batch transform's right padding, then Wav2Lip's end clamp
    assert buffer.n_frames == batch.shape[1]
    if lookahead is Lookahead.DELAY_VIDEO:
        for i in range(int(12 * fps) + 5):
            assert np.abs(buffer.window(t0 + i / fps) - mel_window(batch, i, fps)).max() <= 1e-4


def test_lookahead_latency_and_availability(speech: np.ndarray) -> None:
    assert Lookahead.DELAY_VIDEO.added_latency_ms == pytest.approx(212.5)
    assert Lookahead.SHIFT_WINDOW.added_latency_ms == 0.0
    x = speech[: 3 * SAMPLE_RATE]
    t0, t_end = 100.0, 103.0
    delay, shift = MelBuffer(Lookahead.DELAY_VIDEO), MelBuffer(Lookahead.SHIFT_WINDOW)
    for buffer in (delay, shift):
        push_in_blocks(buffer, x, t0)
        assert buffer.t_end == pytest.approx(t_end)
    # Zero added latency: the window for a frame at the newest audio's time exists; not a hop later.
    assert shift.window(t_end) is not None and shift.window(t_end + 1 / MEL_FPS) is None
    # The true window needs 212.5 ms of audio after the frame's time.
    assert delay.window(t_end - 0.2125) is not None and delay.window(t_end - 0.2125 + 1 / MEL_FPS) is None
    t = 101.3
    np.testing.assert_array_equal(shift.window(t), delay.window(t - 0.2125))
    assert np.all(delay.window(t0 - 1.0) == -4.0)  # before the first sample: silence
    short = MelBuffer(history_s=1.0)
    push_in_blocks(short, x, t0)
    assert short.window(t0 + 0.5) is None and short.window(t_end - 0.5) is not None  # only 1 s is kept


def test_gaps_overlaps_and_jitter(speech: np.ndarray) -> None:
    a, b = speech[16000:32000], speech[40000:56000]  # 1 s each
    t0 = 50.0
    cases = {  # stamp of b relative to contiguous → the samples the buffer should hold
        0.1: np.concatenate([a, np.zeros(1600, np.float32), b]),  # 100 ms gap: silence
        -0.05: np.concatenate([a, b[800:]]),  # 50 ms overlap: b's first 50 ms dropped
        0.004: np.concatenate([a, b]),  # 4 ms of clock jitter: contiguous
    }
    for offset, expected_samples in cases.items():
        buffer = MelBuffer(history_s=5.0)
        buffer.push(a, t0)
        buffer.push(b, t0 + 1.0 + offset)
        expected = melspectrogram(expected_samples)
        for k in range(0, buffer.n_frames - WINDOW_FRAMES, 7):
            t = t0 + (k + 0.5) / MEL_FPS  # mid-frame, so a sub-millisecond drift correction cannot move it
            assert np.abs(buffer.window(t) - expected[:, k : k + WINDOW_FRAMES]).max() <= 1e-4, (offset, k)
    # A jump back by more than max_gap_s (a looping file) restarts the stream.
    buffer = MelBuffer(history_s=5.0, max_gap_s=2.0)
    buffer.push(a, t0)
    buffer.push(b, t0 - 10.0)
    assert buffer.window(t0 - 10.0 + 0.3) is not None


@pytest.mark.parametrize("rate_in", [44100, 48000])
def test_resampling_a_tone(rate_in: int) -> None:
    seconds, tone_hz = 2.0, 1234.0
    t = np.arange(int(seconds * rate_in)) / rate_in
    x = (0.5 * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)
    pulse = np.hanning(round(0.004 * rate_in))  # a 4 ms click at 0.5 s (band-limited): it must not move
    x[rate_in // 2 - pulse.size // 2 :][: pulse.size] += 0.4 * pulse
    y = resample(x, rate_in)
    assert y.dtype == np.float32 and abs(y.size - seconds * SAMPLE_RATE) <= 1
    spectrum = np.abs(np.fft.rfft(y * np.hanning(y.size)))
    assert np.fft.rfftfreq(y.size, 1 / SAMPLE_RATE)[spectrum.argmax()] == pytest.approx(tone_hz, abs=1.0)
    assert np.abs(y[1000:-1000]).max() == pytest.approx(0.5 + 0.4, abs=0.15)
    # Streaming in odd blocks gives the same samples and stamps that follow the sample count exactly.
    stream = StreamResampler(rate_in)
    blocks = []
    t0, position = 17.25, 0
    for size in itertools.cycle((441, 1000, 137)):
        if position >= x.size:
            break
        blocks.append(stream.push(x[position : position + size], t0 + position / rate_in))
        position += size
    blocks.append(stream.flush())
    produced = 0
    for block, t_block in blocks:
        if block.size:
            assert t_block == pytest.approx(t0 + produced / SAMPLE_RATE, abs=1e-9)
        produced += block.size
    streamed = np.concatenate([b for b, _ in blocks])
    assert abs(streamed.size - y.size) <= 2
    n = min(streamed.size, y.size)
    assert np.abs(streamed[:n] - y[:n]).max() < 0.01
    click = np.abs(streamed - 0.5 * np.sin(2 * np.pi * tone_hz * (np.arange(streamed.size) / SAMPLE_RATE)))
    assert abs(int(click.argmax()) - SAMPLE_RATE // 2) <= 1


def write_test_clip(path: Path, codec: str, rate: int, audio_start: float, burst_at: float) -> None:
    """3 s of 25 fps video from t = 0 and audio from `audio_start`: silence with a 1 kHz burst at `burst_at`."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=25)
        video.width = video.height = 64
        video.pix_fmt = "yuv420p"
        sound = container.add_stream(codec, rate=rate)
        sound.layout = "stereo"
        sound.format = "fltp" if codec == "aac" else "s16"
        for i in range(75):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 3 * i, np.uint8), format="rgb24")
            frame.pts = i
            container.mux(video.encode(frame))
        container.mux(video.encode())
        t = audio_start + np.arange(int((3.0 - audio_start) * rate)) / rate
        signal = np.where((t >= burst_at) & (t < burst_at + 0.3), 0.5 * np.sin(2 * np.pi * 1000 * t), 0.0)
        for first in range(0, signal.size, 1024):
            chunk = np.stack([signal[first : first + 1024]] * 2)
            if codec == "aac":
                frame = av.AudioFrame.from_ndarray(chunk.astype(np.float32), format="fltp", layout="stereo")
            else:
                pcm = (chunk.T * 32767).astype(np.int16).reshape(1, -1)  # packed: L R L R ...
                frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="stereo")
            frame.sample_rate = rate
            frame.time_base = fractions.Fraction(1, rate)
            frame.pts = round(audio_start * rate) + first
            container.mux(sound.encode(frame))
        container.mux(sound.encode())


@pytest.mark.parametrize(("suffix", "codec", "rate"), [(".mkv", "pcm_s16le", 48000), (".mp4", "aac", 44100)])
def test_file_audio_is_on_the_presentation_timeline(tmp_path: Path, suffix: str, codec: str, rate: int) -> None:
    path = tmp_path / f"clip{suffix}"
    write_test_clip(path, codec, rate, audio_start=0.5, burst_at=1.5)
    wav, start = read_audio(path)
    if codec == "pcm_s16le":  # PCM has no encoder delay: the track starts exactly where it was written
        assert start == pytest.approx(0.5, abs=1e-6)
    onset = start + np.argmax(np.abs(wav) > 0.1) / SAMPLE_RATE
    assert onset == pytest.approx(1.5, abs=0.002)
    # Streamed blocks into the buffer: the windows of the video frames at 1.48 s and 1.52 s see the burst begin.
    buffer = MelBuffer(Lookahead.DELAY_VIDEO)
    for block, t in iter_file_audio(path):
        buffer.push(block, t)
    buffer.finish()
    before, after = buffer.window(1.28), buffer.window(1.52)  # windows cover [t, t + 0.2 s)
    burst_band = int(np.argmax(mel_filterbank()[:, round(1000 / (SAMPLE_RATE / 800))]))  # the 1 kHz band
    assert before[burst_band].max() < -3.0  # 1.28 + 0.2 < 1.5 - half an STFT window: silence
    assert after[burst_band].min() > 0.0


def test_real_clip_audio_starts_with_its_video() -> None:
    wav, start = read_audio(CLIP)
    with av.open(str(CLIP)) as container:
        stream = container.streams.audio[0]
        seconds = float(stream.duration * stream.time_base)
        first_video = next(container.decode(video=0)).time
    assert start == pytest.approx(first_video, abs=1e-6)
    assert wav.size / SAMPLE_RATE == pytest.approx(seconds, abs=0.03)
    # A 16 kHz track is not resampled: the blocks are the decoded samples' channel mean.
    wav16, _ = read_audio(CLIP_16K)
    with av.open(str(CLIP_16K)) as container:
        decoded = np.concatenate([f.to_ndarray().mean(axis=0) for f in container.decode(audio=0)])
    np.testing.assert_array_equal(wav16, decoded.astype(np.float32))


def test_video_only_file_is_audio_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "silent.mp4"
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=25)
        video.width = video.height = 32
        video.pix_fmt = "yuv420p"
        container.mux(video.encode(av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")))
        container.mux(video.encode())
    with pytest.raises(AudioUnavailable, match="no audio track"):
        read_audio(path)
