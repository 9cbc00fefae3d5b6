"""The neural engine in the loop, with small random-weight generators: every frame out, pixels outside the face
box untouched, a plain model only touches the lower face, bypass and emotion changes ramp, files keep their
audio, and a live camera with a microphone drives it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from livemood.audio.feed import AudioFeed
from livemood.audio.files import read_audio
from livemood.audio.mel import Lookahead, mel_window, melspectrogram
from livemood.backends import cached_onnx
from livemood.backends.cache import ARTEFACT_DIR_VARIABLE, ArtefactCache
from livemood.backends.onnxruntime_runner import OrtRunner
from livemood.cli import main
from livemood.config import EMOTIONS, Controls
from livemood.controls import ControlState
from livemood.engines.neural import NeuralEngine
from livemood.face.align import WAV2LIP_CROP_SIZE, invert_affine, transform_points, wav2lip_transform
from livemood.face.tracker import Face, FaceTracker
from livemood.live.pipeline import Pipeline
from livemood.live.sources import CameraSource
from livemood.live.stats import StageTimes
from livemood.models.checkpoint import save_checkpoint
from livemood.models.wav2lip import SLIM_WIDTH, EmotionWav2Lip, Wav2Lip

from .conftest import audio_packets, read_frames
from .test_live import StopAfter
from .test_microphone import MIC_SINK, SPEECH, open_microphone, pulse  # noqa: F401 - pulse is a fixture
from .test_models import randomised

N = 30
FPS = 25.0


class Recording:
    """Wraps a runner and keeps the inputs it was given."""

    def __init__(self, runner: OrtRunner) -> None:
        self.runner, self.name, self.device, self.conditioned = runner, runner.name, runner.device, runner.conditioned
        self.calls: list[dict[str, np.ndarray]] = []

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        self.calls.append(inputs)
        return self.runner.run(inputs)

    def close(self) -> None:
        self.runner.close()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Slim random-weight checkpoints (conditioned with non-zero FiLM, and plain) and their ONNX exports."""
    folder = tmp_path_factory.mktemp("neural")
    paths = {"conditioned": folder / "cond.pth", "plain": folder / "plain.pth"}
    save_checkpoint(paths["conditioned"], randomised(EmotionWav2Lip(SLIM_WIDTH), seed=3))
    save_checkpoint(paths["plain"], randomised(Wav2Lip(SLIM_WIDTH), seed=4))
    cache = ArtefactCache(folder / "artefacts")
    return paths | {f"{k}.onnx": cached_onnx(v, cache) for k, v in list(paths.items())}


@pytest.fixture(scope="module")
def clip(media: Path) -> tuple[list[np.ndarray], list[Face], list[np.ndarray]]:
    """The first N frames of a shared clip, their tracked faces and Wav2Lip mel windows."""
    path = media / "talk_c.mp4"
    frames = read_frames(path, N)
    with FaceTracker() as tracker:
        faces = [tracker.track(f, round(i * 1e3 / FPS)) for i, f in enumerate(frames)]
    assert all(f is not None for f in faces)
    mel = melspectrogram(read_audio(path)[0])
    return frames, faces, [mel_window(mel, i, FPS) for i in range(N)]


def run(engine: NeuralEngine, clip: tuple[list[np.ndarray], list[Face], list[np.ndarray]],
        controls: list[Controls]) -> list[np.ndarray]:
    frames, faces, windows = clip
    return [engine.process(f, face, w, c) for f, face, w, c in zip(frames, faces, windows, controls, strict=True)]


def crop_rect(face: Face, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """The frame rectangle the 96x96 crop covers (one pixel of margin for bilinear sampling)."""
    s = WAV2LIP_CROP_SIZE
    corners = transform_points(invert_affine(wav2lip_transform(face)), np.array([[0, 0], [s, 0], [0, s], [s, s]]))
    x0, y0 = np.floor(corners.min(axis=0)).astype(int) - 1
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int) + 2
    return max(x0, 0), max(y0, 0), min(x1, shape[1]), min(y1, shape[0])


def test_face_changes_and_everything_outside_its_box_is_untouched(models: dict[str, Path], clip) -> None:
    engine = NeuralEngine(OrtRunner(models["conditioned.onnx"]))
    out = run(engine, clip, [Controls("happy", 0.8)] * N)
    frames, faces, _ = clip
    assert len(out) == N
    for i, (a, b, face) in enumerate(zip(frames, out, faces, strict=True)):
        x0, y0, x1, y1 = crop_rect(face, a.shape)
        outside = np.ones(a.shape[:2], bool)
        outside[y0:y1, x0:x1] = False
        assert np.array_equal(a[outside], b[outside]), f"frame {i}: a pixel outside the face box changed"
        if i >= 5:  # after the 200 ms fade-in the generated face is there
            assert np.abs(a[y0:y1, x0:x1].astype(int) - b[y0:y1, x0:x1]).max() > 30, f"frame {i}"


def test_plain_model_changes_only_the_lower_face(models: dict[str, Path], clip) -> None:
    engine = NeuralEngine(OrtRunner(models["plain.onnx"]))
    frames, faces, _ = clip
    out = run(engine, clip, [Controls("happy", 1.0)] * N)
    for a, b, face in zip(frames[5:], out[5:], faces[5:], strict=True):
        eyes_y = int(face.landmarks[[33, 263], 1].max())
        changed = np.any(a != b, axis=2)
        assert changed.any() and not changed[: eyes_y + 1].any()


def test_bypass_sends_frames_untouched_and_switches_ramp(models: dict[str, Path], clip) -> None:
    frames = clip[0]
    recording = Recording(OrtRunner(models["conditioned.onnx"]))
    engine = NeuralEngine(recording)
    out = run(engine, clip, [Controls("happy", 1.0, bypass=True)] * N)
    assert all(np.array_equal(a, b) for a, b in zip(frames, out, strict=True)) and not recording.calls
    # happy at 1 for 10 frames, then sad: the emotion input moves over ~200 ms (5 frames at 25 fps), never jumps.
    engine = NeuralEngine(recording)
    run(engine, clip, [Controls("happy", 1.0)] * 10 + [Controls("sad", 1.0)] * (N - 10))
    happy, sad = EMOTIONS.index("happy"), EMOTIONS.index("sad")
    # Frame 0 starts the fade-in from nothing, so the generator first runs on frame 1: row i is frame i + 1.
    assert len(recording.calls) == N - 1
    weights = np.array([c["emotion"][0] * c["intensity"][0] for c in recording.calls])  # (frames, E)
    assert np.all(np.abs(np.diff(weights, axis=0)) <= 0.2 + 1e-6)
    assert weights[9 - 1, happy] == pytest.approx(1.0) and weights[-1, sad] == pytest.approx(1.0)
    assert 0.0 < weights[12 - 1, happy] < 1.0 and 0.0 < weights[12 - 1, sad] < 1.0
    np.testing.assert_allclose(recording.calls[-1]["emotion"][0].sum(), 1.0, rtol=1e-6)


def test_file_run_keeps_every_frame_and_the_audio(models: dict[str, Path], media: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ARTEFACT_DIR_VARIABLE, str(tmp_path / "artefacts"))
    clip = media / "talk_e.mp4"
    out = tmp_path / "out.mp4"
    code = main(["--source", str(clip), "--engine", "neural", "--weights", str(models["conditioned"]),
                 "--backend", "onnxruntime-cpu", "--emotion", "sad", "--intensity", "0.7", "--output", str(out)])
    assert code == 0
    assert sorted(p.suffix for p in (tmp_path / "artefacts").iterdir()) == [".json", ".onnx"]  # exported once
    src, dst = read_frames(clip), read_frames(out)
    assert len(dst) == len(src) and dst[0].shape == src[0].shape
    assert audio_packets(out) == audio_packets(clip)
    changed = [float(cv2.absdiff(a, b).mean()) for a, b in zip(src, dst, strict=True)]
    assert np.median(changed) > 1.0, "the generated face is in the output"


def test_neural_engine_needs_weights(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--source", "demo", "--engine", "neural"]) == 2
    assert "needs --weights" in capsys.readouterr().err


def test_live_camera_and_microphone_drive_the_generator(models: dict[str, Path], media: Path,
                                                        pulse: Path,  # noqa: F811
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    recording = Recording(OrtRunner(models["conditioned.onnx"]))
    player = subprocess.Popen(["paplay", f"--device={MIC_SINK}", str(SPEECH)])
    try:
        feed = AudioFeed(Lookahead.DELAY_VIDEO, microphone=open_microphone(monkeypatch, f"{MIC_SINK}.monitor"))
        sink = StopAfter(60)
        source = CameraSource(str(media / "talk_e.mp4"), fps=25.0)  # a file read by OpenCV as a live camera
        result = Pipeline(source, NeuralEngine(recording), [sink], ControlState(Controls("angry", 0.6)),
                          StageTimes(), paced=True, tracker=FaceTracker(), audio=feed).run()
    finally:
        player.kill()
    assert result.interrupted and result.engine_errors == 0
    assert len(recording.calls) >= 20, "held frames found their audio and a face"
    assert any(c["audio"].max() > -3.0 for c in recording.calls[-10:]), "speech, not silence, reached the model"
    assert all(c["intensity"][0] == pytest.approx(0.6) for c in recording.calls[-10:])
