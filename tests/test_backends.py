"""ONNX export parity, every available backend against torch, the artefact cache's checks, and the backend choice.

GPU backends (TensorRT, ONNX Runtime CUDA, torch CUDA) run wherever they are available and are skipped elsewhere
with the reason `backends.unavailable` gives.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import livemood
from livemood.backends import cached_onnx, choose, open_runner, unavailable
from livemood.backends.cache import ARTEFACT_DIR_VARIABLE, ArtefactCache
from livemood.backends.export import PARITY_FLOOR, example_inputs, export_onnx, onnx_parity
from livemood.backends.onnx_model import check_generator_onnx
from livemood.backends.onnxruntime_runner import OrtRunner
from livemood.backends.torch_runner import TorchRunner
from livemood.config import UsageError
from livemood.models.checkpoint import save_checkpoint
from livemood.models.wav2lip import SLIM_WIDTH, EmotionWav2Lip, Wav2Lip, load_generator

from .test_models import randomised

GPU_TOLERANCE = {"tensorrt": 2e-2, "onnxruntime": 1e-3, "torch": 1e-3}  # fp16 TensorRT; TF32 convolutions


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A slim conditioned checkpoint with non-zero FiLM, and a full-width plain one, both with random weights."""
    folder = tmp_path_factory.mktemp("weights")
    conditioned = randomised(EmotionWav2Lip(SLIM_WIDTH), seed=1)
    plain = randomised(Wav2Lip(), seed=2)
    paths = {"conditioned": folder / "cond.pth", "plain": folder / "plain.pth"}
    save_checkpoint(paths["conditioned"], conditioned)
    save_checkpoint(paths["plain"], plain)
    return paths


@pytest.fixture(scope="module")
def exported(checkpoints: dict[str, Path]) -> dict[str, Path]:
    return {kind: cached_onnx(path, ArtefactCache(path.parent / "artefacts")) for kind, path in checkpoints.items()}


@pytest.mark.parametrize("kind", ["conditioned", "plain"])
def test_onnx_matches_torch(checkpoints: dict[str, Path], tmp_path: Path, kind: str) -> None:
    model = load_generator(checkpoints[kind])
    export_onnx(model, tmp_path / "m.onnx")
    check_generator_onnx(tmp_path / "m.onnx")  # the interface a given .onnx is checked against
    assert onnx_parity(model, tmp_path / "m.onnx", batch=3).onnx <= PARITY_FLOOR


def test_export_command_reports_parity(checkpoints: dict[str, Path], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    from livemood.cli import main

    assert main(["export", "--weights", str(checkpoints["conditioned"]), "--out", str(tmp_path / "x.onnx")]) == 0
    line = capsys.readouterr().out
    assert "emotion, intensity" in line and "max|diff|" in line and "ok" in line
    assert main(["export", "--weights", str(tmp_path / "x.onnx"), "--out", str(tmp_path / "y.onnx")]) == 2


def reference(checkpoint: Path, inputs: dict[str, np.ndarray]) -> np.ndarray:
    model = load_generator(checkpoint)
    with torch.inference_mode():
        return model(*(torch.from_numpy(v) for v in inputs.values())).numpy()


@pytest.mark.parametrize("kind", ["conditioned", "plain"])
def test_cpu_backends_match_torch(checkpoints: dict[str, Path], exported: dict[str, Path], kind: str) -> None:
    model = load_generator(checkpoints[kind])
    inputs = example_inputs(model, batch=2, seed=5)
    want = reference(checkpoints[kind], inputs)
    for runner in (OrtRunner(exported[kind]), TorchRunner(model)):
        assert runner.conditioned == (kind == "conditioned")
        got = runner.run(inputs)
        runner.close()
        assert got.shape == want.shape and got.dtype == np.float32
        assert np.abs(got - want).max() <= PARITY_FLOOR, runner.name  # small weights: fp32 is near exact


@pytest.mark.parametrize("backend", ["tensorrt", "onnxruntime", "torch"])
def test_gpu_backends_match_torch(checkpoints: dict[str, Path], tmp_path: Path, backend: str) -> None:
    why = unavailable(backend)
    if why is not None:
        pytest.skip(f"{backend} cannot run here: {why}")
    cache = ArtefactCache(tmp_path / "artefacts")
    runner = open_runner(checkpoints["conditioned"], backend, cache)
    assert runner.device == "cuda"
    inputs = example_inputs(load_generator(checkpoints["conditioned"]), batch=2, seed=6)
    got = runner.run(inputs)
    runner.close()
    assert np.abs(got - reference(checkpoints["conditioned"], inputs)).max() <= GPU_TOLERANCE[backend]
    if backend == "tensorrt":  # the second open takes the plan from the cache; a corrupt one is rebuilt
        plans = sorted(cache.folder.glob("*.plan"))
        assert len(plans) == 1
        open_runner(checkpoints["conditioned"], backend, cache).close()
        assert sorted(cache.folder.glob("*.plan")) == plans
        plans[0].write_bytes(b"garbage")
        rebuilt = open_runner(checkpoints["conditioned"], backend, cache)
        assert np.abs(rebuilt.run(inputs) - got).max() <= GPU_TOLERANCE[backend]
        rebuilt.close()


def test_cache_checks_key_and_bytes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = ArtefactCache(tmp_path / "artefacts")
    key = {"onnx_sha256": "ab" * 32, "tensorrt": "10.3.0", "gpu": "NVIDIA H100", "compute_capability": "9.0"}
    assert cache.lookup("m.plan", key) is None
    path = cache.store("m.plan", key, b"plan bytes")
    assert cache.lookup("m.plan", key) == path and path.read_bytes() == b"plan bytes"
    caplog.set_level(logging.WARNING)
    assert cache.lookup("m.plan", {**key, "tensorrt": "10.5.0"}) is None
    assert "10.3.0" in caplog.text and "10.5.0" in caplog.text and "rebuilding" in caplog.text
    caplog.clear()
    path.write_bytes(b"plan bytez")
    assert cache.lookup("m.plan", key) is None and "corrupt" in caplog.text
    (tmp_path / "artefacts" / "m.plan.json").write_text("{")
    assert cache.lookup("m.plan", key) is None
    assert sorted(p.name for p in cache.folder.iterdir()) == ["m.plan", "m.plan.json"], "no temporary file left"


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="the XDG layout is the Linux one")
def test_artefacts_go_to_the_user_cache_folder(checkpoints: dict[str, Path], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ARTEFACT_DIR_VARIABLE, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    onnx = cached_onnx(checkpoints["conditioned"], ArtefactCache())
    assert onnx.parent == tmp_path / "xdg" / "livemood" and onnx.is_file()
    package = Path(livemood.__file__).resolve().parents[1]
    assert not onnx.resolve().is_relative_to(package), "nothing is written into the installed package"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert ArtefactCache().folder == tmp_path / "home" / ".cache" / "livemood"
    monkeypatch.setenv(ARTEFACT_DIR_VARIABLE, str(tmp_path / "mine"))
    assert ArtefactCache().folder == tmp_path / "mine", "LIVEMOOD_ENGINE_DIR still overrides"


def test_onnx_export_is_cached_by_checkpoint_hash(checkpoints: dict[str, Path], exported: dict[str, Path]) -> None:
    onnx = exported["conditioned"]
    stamp = onnx.stat().st_mtime_ns
    again = cached_onnx(checkpoints["conditioned"], ArtefactCache(onnx.parent))
    assert again == onnx and onnx.stat().st_mtime_ns == stamp  # not exported a second time
    record = json.loads(onnx.with_name(onnx.name + ".json").read_text())
    assert record["torch"] == torch.__version__ and len(record["weights_sha256"]) == 64


def test_auto_takes_the_fastest_available_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    choice = choose("auto")
    gpu = [b for b in ("tensorrt", "onnxruntime", "torch") if unavailable(b) is None]
    if gpu:
        assert choice.backend == gpu[0] and choice.cuda
    else:  # the CPU fallback is announced with every GPU backend's reason
        assert choice.backend == "onnxruntime-cpu" and not choice.cuda
        assert "running on the CPU" in caplog.text
        assert all(f"{b}: {unavailable(b)}" in caplog.text for b in ("tensorrt", "onnxruntime", "torch"))


def test_impossible_backend_requests_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="torch backend needs a checkpoint"):
        choose("torch", onnx_only=True)
    with pytest.raises(UsageError, match="unknown backend"):
        choose("cuda")
    why = unavailable("tensorrt")
    if why is None:
        pytest.skip("tensorrt is available here")
    with pytest.raises(UsageError, match="tensorrt backend cannot run here"):
        choose("tensorrt")
