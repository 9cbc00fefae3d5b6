"""The real microphone and audio-out paths, through a private PulseAudio server with null sinks.

Speech is played with `paplay` into a null sink; `Microphone` records that sink's monitor through PortAudio's
`pulse` device. DelayedAudioOut plays into a second null sink whose monitor a second Microphone records, so
the delay is measured between two recordings stamped on the same pipeline clock. The DelayLine's slewing and
crossfades are checked offline with a simulated sound card.
"""

from __future__ import annotations

import ctypes.util
import itertools
import subprocess
import sys
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from livemood.audio.delayed_out import DEAD_BAND_S, DelayedAudioOut, DelayLine
from livemood.audio.files import resample
from livemood.audio.mel import MEL_FPS, SAMPLE_RATE, AudioUnavailable, MelBuffer, mel_window, melspectrogram
from livemood.audio.microphone import Microphone
from livemood.engines import PassthroughEngine
from livemood.frames import now

from .pulse import MIC_SINK, NULL_SINKS, OUT_SINK, missing_tools, private_pulseaudio

MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"
SPEECH = MEDIA / "speech_en_16k.wav"
START_TIMEOUT_S = 10.0  # PortAudio's ALSA "pulse" device can take 1-2 s to deliver its first block


def load_speech(start_s: float, seconds: float) -> np.ndarray:
    with wave.open(str(SPEECH)) as w:
        w.setpos(int(start_s * SAMPLE_RATE))
        pcm = np.frombuffer(w.readframes(int(seconds * SAMPLE_RATE)), dtype="<i2")
    return pcm.astype(np.float32) / 32768.0


def write_wav(path: Path, x: np.ndarray) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())
    return path


@pytest.fixture(scope="module")
def pulse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The private PulseAudio server of `tests.pulse`, as this module's PULSE_SERVER."""
    missing = missing_tools()
    if missing:
        pytest.skip(f"PulseAudio not found ({', '.join(missing)}): apt-get install pulseaudio pulseaudio-utils")
    if ctypes.util.find_library("portaudio") is None:
        pytest.skip("PortAudio not found: apt-get install libportaudio2")
    patch = pytest.MonkeyPatch()
    patch.delenv("PULSE_SERVER", raising=False)  # restored afterwards: private_pulseaudio sets it
    try:
        with private_pulseaudio(tmp_path_factory.mktemp("pulse")) as server:
            yield server
    finally:
        patch.undo()


def open_microphone(monkeypatch: pytest.MonkeyPatch, source: str, ring_s: float = 8.0) -> Microphone:
    """A Microphone on PortAudio's ALSA `pulse` device recording `source` (read by libpulse at open)."""
    monkeypatch.setenv("PULSE_SOURCE", source)
    mic = Microphone("pulse", ring_s=ring_s)
    deadline = now() + START_TIMEOUT_S
    while not mic.read(timeout=0.1):  # wait for the stream to run; its first blocks are silence
        assert now() < deadline, "the microphone delivered nothing"
    return mic


def joined(blocks: list[tuple[np.ndarray, float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A recording's samples end to end, with each block's first index and stamp (to find any sample's time)."""
    firsts = np.cumsum([0] + [block.size for block, _ in blocks[:-1]])
    return np.concatenate([block for block, _ in blocks]), firsts, np.array([t for _, t in blocks])


def time_at(firsts: np.ndarray, stamps: np.ndarray, index: int) -> float:
    """Pipeline-clock time of sample `index` of a joined recording."""
    k = int(np.searchsorted(firsts, index, side="right")) - 1
    return float(stamps[k] + (index - firsts[k]) / SAMPLE_RATE)


def lag_of(reference: np.ndarray, signal: np.ndarray) -> tuple[int, float]:
    """Samples by which `signal` trails `reference` (FFT cross-correlation), and the normalised correlation of
    `reference` with the part of `signal` it matches there (1 = identical up to gain)."""
    n = 1 << int(np.ceil(np.log2(reference.size + signal.size)))
    xcorr = np.fft.irfft(np.fft.rfft(signal, n) * np.conj(np.fft.rfft(reference, n)), n)
    lag = int(np.argmax(xcorr))
    lag = lag if lag < n // 2 else lag - n
    matched = signal[max(lag, 0) : lag + reference.size]
    return lag, float(xcorr[lag] / (np.linalg.norm(reference) * np.linalg.norm(matched) + 1e-12))


def test_missing_portaudio_is_audio_unavailable(tmp_path: Path, monkeypatch) -> None:
    # What sounddevice raises on import when libportaudio2 is missing, without uninstalling it.
    (tmp_path / "sounddevice.py").write_text("raise OSError('PortAudio library not found')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    with pytest.raises(AudioUnavailable, match="apt-get install libportaudio2"):
        Microphone()
    with pytest.raises(AudioUnavailable, match="libportaudio2"):
        DelayedAudioOut()


def test_missing_device_is_audio_unavailable(pulse: Path) -> None:
    with pytest.raises(AudioUnavailable, match="no input audio device 'no such microphone'"):
        Microphone("no such microphone")


def test_microphone_records_speech_on_the_pipeline_clock(pulse: str, tmp_path: Path, monkeypatch) -> None:
    speech = load_speech(5.0, 6.0)
    clip = write_wav(tmp_path / "speech.wav", speech)
    with open_microphone(monkeypatch, f"{MIC_SINK}.monitor") as mic:
        blocks: list[tuple[np.ndarray, float]] = []
        t_play = now()
        player = subprocess.Popen(["paplay", f"--device={MIC_SINK}", str(clip)])
        while player.poll() is None:
            blocks += mic.read(timeout=0.05)
        t_stop = now() + 0.5
        while now() < t_stop:
            blocks += mic.read(timeout=0.05)
        assert player.returncode == 0
        assert mic.overflows == 0 and mic.rate == 44100  # the pulse device runs at 44.1 kHz: resampled here
    # Stamps advance with the sample count (smoothed device clock), far closer than a mel frame (12.5 ms).
    for (a, t_a), (_, t_b) in itertools.pairwise(blocks):
        assert abs(t_b - (t_a + a.size / SAMPLE_RATE)) < 0.002
    # Waveforms are matched on the sample stream; stamps only have to place it within a fraction of a mel frame.
    recorded, firsts, stamps = joined(blocks)
    lag, peak = lag_of(speech, recorded)
    assert peak > 0.9  # the same speech, through three resamplers (PulseAudio's, PortAudio's rate, ours)
    onset = time_at(firsts, stamps, lag)  # when the speech's first sample was captured, on the pipeline clock
    assert -0.05 < onset - t_play < 1.0  # after paplay started (stamps are estimates: ms of bias), in its start-up
    # The rolling mel of the recording, asked for at video frame times, matches Wav2Lip's mel of the file.
    buffer = MelBuffer(history_s=20.0)
    for block, t in blocks:
        buffer.push(block, t)
    reference = melspectrogram(speech)
    fps, n_video = 25.0, int(5.5 * 25)

    def similarity(shift_frames: int) -> float:
        scores = []
        for i in range(n_video):
            window = buffer.window(onset + i / fps + shift_frames / MEL_FPS)
            scores.append(np.corrcoef(window.ravel(), mel_window(reference, i, fps).ravel())[0, 1])
        return float(np.mean(scores))

    shifts = {s: similarity(s) for s in range(-4, 5)}
    assert shifts[0] > 0.9
    assert abs(max(shifts, key=shifts.get)) <= 1  # aligned within one mel frame


def test_a_slow_consumer_loses_old_audio_as_a_stamped_gap(pulse: str, monkeypatch, caplog) -> None:
    with open_microphone(monkeypatch, f"{MIC_SINK}.monitor", ring_s=0.5) as mic:
        time.sleep(1.5)  # the consumer stalls for three times the ring
        blocks = mic.read()
        time.sleep(0.2)
        blocks += mic.read(timeout=0.5)
        t_read = now()
    assert mic.overflows > 0
    assert [r.getMessage() for r in caplog.records if "overflowed" in r.getMessage()] == [
        "microphone ring overflowed (consumer more than 0.5 s behind): audio dropped"
    ]  # logged once
    # What was dropped shows as a gap between stamped blocks, not as audio moved in time.
    gaps = [t_b - (t_a + a.size / SAMPLE_RATE) for (a, t_a), (_, t_b) in itertools.pairwise(blocks)]
    assert max(gaps) > 0.5
    assert all(abs(g) < 0.002 for g in gaps if g < 0.5)
    last, t_last = blocks[-1]
    assert t_read - 0.2 < t_last + last.size / SAMPLE_RATE <= t_read


def test_delayed_audio_out_plays_after_the_set_delay(pulse: str, tmp_path: Path, monkeypatch) -> None:
    speech = load_speech(20.0, 9.0)
    clip = write_wav(tmp_path / "speech.wav", speech)
    first_delay, second_delay, switch_s = 0.3, 0.5, 4.5
    monkeypatch.setenv("PULSE_SINK", OUT_SINK)
    with (
        open_microphone(monkeypatch, f"{MIC_SINK}.monitor") as mic,
        open_microphone(monkeypatch, f"{OUT_SINK}.monitor") as listener,
        DelayedAudioOut("pulse", delay_s=first_delay) as out,
    ):
        captured: list[tuple[np.ndarray, float]] = []
        heard: list[tuple[np.ndarray, float]] = []
        t_play = now()
        player = subprocess.Popen(["paplay", f"--device={MIC_SINK}", str(clip)])
        while player.poll() is None or now() < t_play + speech.size / SAMPLE_RATE + second_delay + 1.0:
            for block, t in mic.read(timeout=0.01):
                out.write(block, t)
                captured.append((block, t))
            heard += listener.read()
            if now() > t_play + switch_s and out.delay_s == first_delay:
                out.delay_s = second_delay
        assert player.returncode == 0
        assert out.line.applied_delay_s == pytest.approx(second_delay, abs=DEAD_BAND_S + 0.001)
    mine, my_firsts, my_stamps = joined(captured)
    theirs, their_firsts, their_stamps = joined(heard)
    # Delay from capture to playback, from the two recordings' pipeline-clock stamps, on the loudest 0.25 s
    # pieces of each stretch. Both microphones share their latency error (same device, same source type); what
    # remains is PortAudio's playback latency figure vs. PulseAudio's real buffering, stamp smoothing and the
    # playout's 2 ms dead band. Measured here: 8 ms short. 25 ms (2 mel frames) covers it.
    piece = SAMPLE_RATE // 4
    for (start, stop), delay in (((1.0, 4.0), first_delay), ((6.0, 9.0), second_delay)):
        i_start = my_firsts[int(np.searchsorted(my_stamps, t_play + start))]
        i_stop = my_firsts[int(np.searchsorted(my_stamps, t_play + stop))]
        pieces = range(i_start, i_stop - piece, piece)
        for i0 in sorted(pieces, key=lambda i: -np.std(mine[i : i + piece]))[:5]:
            t_capture = time_at(my_firsts, my_stamps, i0)
            j0 = their_firsts[int(np.searchsorted(their_stamps, t_capture + delay - 0.1)) - 1]
            # 4x upsampled: the two recordings' sample grids are offset by a fraction of a sample.
            lag, peak = lag_of(
                resample(mine[i0 : i0 + piece], SAMPLE_RATE, 4 * SAMPLE_RATE),
                resample(theirs[j0 : j0 + piece + SAMPLE_RATE // 5], SAMPLE_RATE, 4 * SAMPLE_RATE),
            )
            assert peak > 0.95  # the playout is the captured audio, unfiltered
            measured = time_at(their_firsts, their_stamps, j0) + lag / (4 * SAMPLE_RATE) - t_capture
            assert measured == pytest.approx(delay, abs=0.025)


def simulate(line: DelayLine, source: np.ndarray, seconds: float, changes: dict[float, float]) -> np.ndarray:
    """Drive a DelayLine like a sound card would: input in 10 ms blocks, output callbacks of 441 frames."""
    out_rate, frames = line.out_rate, 441
    t0, written, rendered = 1000.0, 0, []
    pending = dict(changes)
    for k in range(int(seconds * out_rate / frames)):
        t_play = t0 + k * frames / out_rate
        while t0 + (written + 160) / SAMPLE_RATE <= t_play:  # the microphone delivers up to "now"
            line.write(source[written : written + 160], t0 + written / SAMPLE_RATE)
            written += 160
        for at in [at for at in pending if t_play - t0 >= at]:
            line.delay_s = pending.pop(at)
        rendered.append(line.render(frames, t_play))
    return resample(np.concatenate(rendered), out_rate)  # back to 16 kHz: sample i plays at t0 + i / 16000


@pytest.mark.parametrize("out_rate", [16000, 44100])
def test_delay_line_slews_and_crossfades_without_clicks(out_rate: int) -> None:
    tone_hz = 440.0
    source = (0.5 * np.sin(2 * np.pi * tone_hz * np.arange(15 * SAMPLE_RATE) / SAMPLE_RATE)).astype(np.float32)
    line = DelayLine(0.2, out_rate)
    played = simulate(line, source, 12.0, {3.0: 0.23, 7.0: 0.6})  # slew 30 ms, then jump 370 ms
    # No clicks: the largest step between samples stays that of the tone (plus the 20 ms crossfade's slope).
    biggest_step = 0.5 * 2 * np.pi * tone_hz / SAMPLE_RATE
    assert np.abs(np.diff(played[SAMPLE_RATE:])).max() < 1.15 * biggest_step
    assert line.applied_delay_s == pytest.approx(0.6, abs=1e-3)
    # Where the tone is steady, it is the source delayed by the delay then in force, give or take the 2 ms
    # dead band in which the playout leaves the rate alone.
    for at, delay in ((2.0, 0.2), (6.5, 0.23), (11.0, 0.6)):  # 6.5 s: the slew has settled
        i, nominal = int(at * SAMPLE_RATE), round(delay * SAMPLE_RATE)
        errors = {
            d: np.abs(played[i : i + 800] - source[i - d :][:800]).max() for d in range(nominal - 40, nominal + 41)
        }
        best = min(errors, key=errors.get)
        assert errors[best] < 0.02 and abs(best - nominal) <= DEAD_BAND_S * SAMPLE_RATE + 1
    # The 30 ms change was slewed (at most 2 % faster or slower), not jumped.
    line = DelayLine(0.2, out_rate)
    simulate(line, source, 3.5, {3.0: 0.23})
    assert 0.2 + 0.005 < line.applied_delay_s < 0.2 + 0.5 * 0.02 + 0.001


class NeedsAudio(PassthroughEngine):
    """Passes frames through, noting whether each came with its mel window (an engine that needs speech)."""

    needs_audio = True

    def __init__(self) -> None:
        self.windows: list[bool] = []

    def process(self, frame: np.ndarray, face: object, audio: np.ndarray | None, controls: object) -> np.ndarray:
        self.windows.append(audio is not None)
        return frame


def null_sinks() -> list[str]:
    modules = subprocess.run(["pactl", "list", "short", "modules"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in modules.splitlines() if "module-null-sink" in line]


def test_microphone_source_gone_and_back_keeps_video_flowing(pulse: str, monkeypatch, caplog) -> None:
    # With every PulseAudio source gone the stream dies (with another left, PulseAudio moves it there itself).
    import logging
    import threading

    from livemood.audio.feed import AudioFeed
    from livemood.config import Controls
    from livemood.controls import ControlState
    from livemood.live.pipeline import Pipeline
    from livemood.live.sources import CameraSource
    from livemood.live.stats import StageTimes

    from .test_faults import Stamps

    mic = open_microphone(monkeypatch, f"{MIC_SINK}.monitor")
    engine = NeedsAudio()
    source = CameraSource(str(MEDIA / "talk_e.mp4"), fps=25.0)
    t_start = now()
    back_at: list[float] = []

    def unplug_and_replug() -> None:
        for module in null_sinks():
            subprocess.run(["pactl", "unload-module", module], check=True)
        time.sleep(2.0)
        for name, rate in NULL_SINKS.items():
            subprocess.run(["pactl", "load-module", "module-null-sink", f"sink_name={name}", f"rate={rate}"],
                           check=True, capture_output=True)

    def until() -> bool:
        if not back_at and mic.outage.count and not mic.outage.active:
            back_at.append(now())
        return (bool(back_at) and now() - back_at[0] > 1.0) or now() - t_start > 25

    sink = Stamps(until)
    plug = threading.Timer(1.0, unplug_and_replug)
    plug.start()
    try:
        with caplog.at_level(logging.INFO, logger="livemood.audio.microphone"):
            Pipeline(source, engine, [sink], ControlState(Controls()), StageTimes(), paced=True,
                     audio=AudioFeed(microphone=mic)).run()
    finally:
        plug.join()
        if len(null_sinks()) < 2:  # the other tests need their sinks back
            unplug_and_replug()
    assert back_at, "the microphone came back"
    sink.assert_flowing()  # video never waited on the lost microphone
    lines = [m for m in (r.getMessage() for r in caplog.records) if "gives no audio" in m or "is back" in m]
    assert len(lines) == 2 and lines[1].startswith("microphone 'pulse' is back after "), lines
    assert not all(engine.windows) and engine.windows[-1], "frames went without audio while it was gone, then with"
