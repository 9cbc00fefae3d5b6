"""Audio inside the pipeline: every frame of an audio engine gets its mel window, from a file or a microphone."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from livemood.audio.feed import AudioFeed
from livemood.audio.files import read_audio
from livemood.audio.mel import WINDOW_FRAMES, Lookahead, mel_window, melspectrogram
from livemood.cli import main
from livemood.config import Controls
from livemood.controls import ControlState
from livemood.engines import PassthroughEngine
from livemood.live.pipeline import Pipeline
from livemood.live.sources import CameraSource, FileSource
from livemood.live.stats import StageTimes

from .test_live import StopAfter
from .test_microphone import MIC_SINK, SPEECH, open_microphone, pulse  # noqa: F401 - pulse is a fixture


class AudioSpy(PassthroughEngine):
    """An engine that needs audio and keeps every window it is given."""

    name = "audio-spy"
    needs_audio = True

    def __init__(self) -> None:
        self.windows: list[np.ndarray | None] = []

    def process(self, frame: np.ndarray, face: object, audio: np.ndarray | None, controls: Controls) -> np.ndarray:
        self.windows.append(audio)
        return frame


def test_file_frames_get_wav2lips_windows(media: Path) -> None:
    clip = media / "talk_a.mp4"
    engine = AudioSpy()
    source = FileSource(clip)
    feed = AudioFeed(Lookahead.DELAY_VIDEO, file=clip)
    Pipeline(source, engine, [StopAfter(10**6)], ControlState(Controls()), StageTimes(), paced=False,
             audio=feed).run()
    wav, t0 = read_audio(clip)
    assert abs(t0) < 1e-3, "this clip's audio starts with its video"
    mel = melspectrogram(wav)
    assert len(engine.windows) == 125 and all(w is not None for w in engine.windows)
    # Away from the last frames (whose windows run past the centre-padded end) they are Wav2Lip's batch windows.
    last_full = (mel.shape[1] - WINDOW_FRAMES - 3) * 25 // 80
    for i in range(last_full):
        assert np.abs(engine.windows[i] - mel_window(mel, i, 25.0)).max() <= 1e-4, f"frame {i}"


def test_engine_that_needs_audio_refuses_a_source_without_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    import livemood.live.pipeline

    monkeypatch.setattr(livemood.live.pipeline, "make_engine", lambda *args: AudioSpy())
    code = main(["--source", "demo", "--output", str(tmp_path / "x.mp4")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "needs audio" in err[0]
    assert list(tmp_path.iterdir()) == []


def test_live_camera_and_microphone_hold_video_for_the_lookahead(pulse: Path, media: Path,  # noqa: F811
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    player = subprocess.Popen(["paplay", f"--device={MIC_SINK}", str(SPEECH)])
    try:
        mic = open_microphone(monkeypatch, f"{MIC_SINK}.monitor")
        feed = AudioFeed(Lookahead.DELAY_VIDEO, microphone=mic)
        engine, times = AudioSpy(), StageTimes()
        source = CameraSource(str(media / "talk_e.mp4"), fps=25.0)
        result = Pipeline(source, engine, [StopAfter(60)], ControlState(Controls()), times, paced=True,
                          audio=feed).run()
    finally:
        player.kill()
    assert result.interrupted
    recent = engine.windows[-30:]
    assert sum(w is not None for w in recent) >= 27, "the held frames found their audio"
    assert any(w is not None and w.max() > -3.0 for w in recent), "speech, not silence, reached the engine"
    assert np.median(times.latencies) * 1e3 >= Lookahead.DELAY_VIDEO.added_latency_ms, "video waited for audio"


def test_assemble_closes_what_it_opened_when_audio_is_unavailable(monkeypatch: pytest.MonkeyPatch,
                                                                   media: Path, tmp_path: Path) -> None:
    """`evaluate --weights` assembles pipelines in-process: a refused one must not leave an engine or tracker open."""
    import livemood.live.pipeline
    from livemood.config import OutputConfig, RunConfig, SourceConfig, UsageError
    from livemood.face.tracker import FaceTracker
    from livemood.live.pipeline import assemble

    closed: list[str] = []

    class FaceAndAudioSpy(AudioSpy):
        needs_face = True

        def close(self) -> None:
            closed.append("engine")

    class RecordingTracker(FaceTracker):
        def close(self) -> None:
            closed.append("tracker")
            super().close()

    monkeypatch.setattr(livemood.live.pipeline, "make_engine", lambda *args: FaceAndAudioSpy())
    monkeypatch.setattr(livemood.live.pipeline, "FaceTracker", RecordingTracker)
    silent = media / "mead" / "M030_front_neutral_level1_001.mp4"  # a clip without an audio track
    config = RunConfig(SourceConfig.parse(str(silent)), OutputConfig(tmp_path / "x.mp4"))
    with pytest.raises(UsageError, match="needs audio"):
        assemble(config, StageTimes())
    assert sorted(closed) == ["engine", "tracker"]
    assert list(tmp_path.iterdir()) == [], "the file sink was aborted"
