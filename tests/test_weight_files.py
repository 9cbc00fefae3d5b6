"""Weights and model files that are refused (not ONNX, an ONNX model of another shape, a checkpoint of the wrong
architecture): one line naming the problem, exit status 2, before any work; and the export's parity check, which
allows for fp32's own rounding at realistic weight scales but still refuses a wrong graph."""

from __future__ import annotations

import logging
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from livemood.backends.cache import ARTEFACT_DIR_VARIABLE
from livemood.backends.export import example_inputs, export_onnx, onnx_parity
from livemood.backends.onnx_model import check_generator_onnx
from livemood.backends.onnxruntime_runner import OrtRunner
from livemood.cli import main
from livemood.config import EXIT_USAGE
from livemood.models.checkpoint import save_checkpoint
from livemood.models.syncnet import SyncNet
from livemood.models.wav2lip import EmotionWav2Lip, Wav2Lip, load_generator

WIDTH = 0.25  # small generators: each export or forward pass takes about a second on the CPU
OLD_TOLERANCE = 1e-4  # the export's former bound on |ONNX Runtime - torch fp32|
# Kaiming-normal weights x1.2: activations grow to ~1e4 before the sigmoid (max |logit| 9e3 at seed 0). torch
# fp32 is then 3e-4 to 8e-4 off float64 (seeds 0-3; the tester's checkpoint: 3.1e-4), and ONNX Runtime 3e-4 to
# 6e-4 off torch fp32.
REALISTIC_GAIN = 1.2


def realistic(model: nn.Module, gain: float, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, nn.Conv2d | nn.ConvTranspose2d):
                mode = "fan_out" if isinstance(layer, nn.ConvTranspose2d) else "fan_in"
                nn.init.kaiming_normal_(layer.weight, mode=mode, nonlinearity="relu").mul_(gain)
    return model.eval()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A realistic-scale generator checkpoint, a tiny generator's export, and checkpoints of the wrong
    architecture."""
    folder = tmp_path_factory.mktemp("weights")
    paths = {name: folder / f"{name}.pth" for name in ("generator", "syncnet", "wide")}
    save_checkpoint(paths["generator"], realistic(Wav2Lip(WIDTH), REALISTIC_GAIN, seed=0))
    save_checkpoint(paths["syncnet"], SyncNet())
    save_checkpoint(paths["wide"], EmotionWav2Lip(2 * WIDTH))
    paths["export"] = folder / "tiny.onnx"
    export_onnx(EmotionWav2Lip(WIDTH / 4), paths["export"])
    check_generator_onnx(paths["export"])  # livemood's own export is what the check expects
    return paths


@pytest.fixture
def refusal(capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> Callable[[list[str]], str]:
    """Runs a command that must be refused with exit status 2; returns its one stderr line. Warnings are logged
    (to stderr outside the tests) only after the checks, so none comes before it."""

    def run(argv: list[str]) -> str:
        caplog.clear()
        status = main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert status == EXIT_USAGE and len(err) == 1 and err[0].startswith("livemood: error: "), (status, err)
        assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        return err[0]

    return run


def bad_onnx(case: str, folder: Path, export: Path) -> Path:
    path = folder / f"{case}.onnx"
    if case == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif case == "truncated":
        path.write_bytes(export.read_bytes()[: export.stat().st_size // 2])
    elif case == "pickle":
        path.write_bytes(pickle.dumps({"state_dict": {"w": [0.0] * 16}}))
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "classifier":  # an image classifier's interface, written with the onnx package
        x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])
        y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3, 224, 224])
        graph = helper.make_graph([helper.make_node("Identity", ["input"], ["logits"])], "classifier", [x], [y])
        onnx.save(helper.make_model(graph), path)
    elif case == "larger_face":  # a generator's input names, a 128x128 face, exported from torch
        class Larger(nn.Module):
            def forward(self, audio: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
                return face[:, :3] * audio.mean()

        torch.onnx.export(Larger(), (torch.zeros(1, 1, 80, 16), torch.zeros(1, 6, 128, 128)), str(path),
                          input_names=["audio", "face"], output_names=["image"], dynamo=False)
    elif case in ("unknown_op", "type_error"):  # a generator's interface around a graph that cannot run
        inputs = [helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["N", 1, 80, 16]),
                  helper.make_tensor_value_info("face", TensorProto.FLOAT, ["N", 6, 96, 96])]
        image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 96, 96])
        if case == "unknown_op":
            nodes = [helper.make_node("Lipsync", ["audio", "face"], ["image"], domain="com.example")]
        else:  # the checker passes it; ONNX Runtime's type inference refuses float + int64
            nodes = [helper.make_node("Cast", ["face"], ["whole"], to=TensorProto.INT64),
                     helper.make_node("Add", ["face", "whole"], ["image"])]
        onnx.save(helper.make_model(helper.make_graph(nodes, case, inputs, [image])), path)
    return path


@pytest.mark.parametrize(("case", "says"), [
    ("random", "is not an ONNX model (it does not parse"),
    ("truncated", "is not an ONNX model (it does not parse"),
    ("pickle", "is not an ONNX model (it does not parse"),
    ("empty", "is not an ONNX model (it holds no graph)"),
    ("classifier", "does not take a generator's inputs: it takes input (N, 3, 224, 224) float; a generator takes "
                   "audio (batch, 1, 80, 16) float, face (batch, 6, 96, 96) float"),
    ("larger_face", "it takes audio (1, 1, 80, 16) float, face (1, 6, 128, 128) float; a generator takes"),
    ("unknown_op", "is not a valid ONNX model: No opset import for domain 'com.example'"),
    ("type_error", "ONNX Runtime cannot load"),
])
def test_a_bad_onnx_file_is_refused_before_the_run(files: dict[str, Path], tmp_path: Path,
                                                   refusal: Callable[[list[str]], str], case: str, says: str) -> None:
    path, out = bad_onnx(case, tmp_path, files["export"]), tmp_path / "out.mp4"
    line = refusal(["--source", "demo", "--engine", "neural", "--weights", str(path), "--backend",
                            "onnxruntime-cpu", "--output", str(out)])
    assert str(path) in line and says in line
    assert not out.exists()


def test_the_real_command_prints_one_line_for_a_random_onnx(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(np.random.default_rng(1).bytes(4096))
    run = subprocess.run([sys.executable, "-m", "livemood", "--source", "demo", "--engine", "neural", "--weights",
                          str(path), "--output", str(tmp_path / "out.mp4")], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == EXIT_USAGE
    assert run.stderr.splitlines() == [f"livemood: error: {path} is not an ONNX model (it does not parse as one: "
                                       "truncated, or another kind of file)"]


@pytest.fixture
def videos(media: Path, tmp_path: Path) -> Path:
    """A training folder with one real clip: preprocessing it would be the first work a run does."""
    folder = tmp_path / "videos" / "P01" / "happy" / "level_3"
    folder.mkdir(parents=True)
    (folder / "001.mp4").symlink_to(media / "talk_c.mp4")
    return tmp_path / "videos"


@pytest.mark.parametrize(("option", "given", "says"), [
    ("--init", "syncnet", "missing tensor 'face_encoder_blocks.0.0.conv_block.0.weight': not a Wav2Lip generator"),
    ("--syncnet", "generator", "not a SyncNet_color"),
    ("--resume", "wide", "has shape (8, 6, 7, 7), expected (4, 6, 7, 7)"),
    ("--resume", "export", "is not a PyTorch checkpoint"),
])
def test_train_refuses_a_checkpoint_before_any_work(files: dict[str, Path], videos: Path, tmp_path: Path,
                                                    refusal: Callable[[list[str]], str], option: str, given: str,
                                                    says: str) -> None:
    out = tmp_path / "run"
    line = refusal(["train", "--data", str(videos), "--out", str(out), "--width", str(WIDTH),
                            "--steps", "1", "--batch", "1", "--device", "cpu", option, str(files[given])])
    assert line.startswith(f"livemood: error: {option}: ") and str(files[given]) in line and says in line
    assert not out.exists(), "nothing is preprocessed or written before the checkpoints are checked"


@pytest.fixture
def evaluation(media: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    monkeypatch.setenv(ARTEFACT_DIR_VARIABLE, str(tmp_path / "artefacts"))
    return {"source": media / "talk_c.mp4", "output": tmp_path / "out.mp4", "artefacts": tmp_path / "artefacts"}


@pytest.mark.parametrize(("option", "given", "says"), [
    ("--syncnet", "generator", "--syncnet: {path}: missing tensor 'face_encoder.0.conv_block.0.weight'"),
    ("--syncnet", "missing", "--syncnet: cannot read {path}: No such file or directory"),
    ("--weights", "syncnet", "{path}: missing tensor 'face_encoder_blocks.0.0.conv_block.0.weight'"),
])
def test_evaluate_refuses_a_checkpoint_before_rendering(files: dict[str, Path], evaluation: dict[str, Path],
                                                        tmp_path: Path, refusal: Callable[[list[str]], str],
                                                        option: str, given: str, says: str) -> None:
    path = files.get(given, tmp_path / "missing.pth")
    weights = path if option == "--weights" else files["generator"]
    argv = ["evaluate", "--source", str(evaluation["source"]), "--output", str(evaluation["output"]),
            "--weights", str(weights), "--backend", "onnxruntime-cpu"]
    if option == "--syncnet":
        argv += ["--syncnet", str(path)]
    assert says.format(path=path) in refusal(argv)
    assert not evaluation["output"].exists() and not evaluation["artefacts"].exists()


def test_export_refuses_a_checkpoint_of_another_network(files: dict[str, Path], tmp_path: Path,
                                                        refusal: Callable[[list[str]], str]) -> None:
    line = refusal(["export", "--weights", str(files["syncnet"]), "--out", str(tmp_path / "x.onnx")])
    assert "not a Wav2Lip generator" in line and not (tmp_path / "x.onnx").exists()


def test_export_parity_allows_fp32_rounding_and_refuses_a_wrong_graph(files: dict[str, Path], tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "g.onnx"
    assert main(["export", "--weights", str(files["generator"]), "--out", str(out)]) == 0
    line = capsys.readouterr().out
    assert "(ok, tolerance" in line
    fp32_error = float(line.split("torch fp32 ")[1].split()[0])
    assert fp32_error > OLD_TOLERANCE, line  # fp32 itself is that far from float64 on these weights
    model = load_generator(files["generator"])
    inputs = example_inputs(model, 2, seed=1)
    with torch.inference_mode():
        fp32 = model(*(torch.from_numpy(v) for v in inputs.values())).numpy()
    runner = OrtRunner(out)
    old = float(np.abs(runner.run(inputs) - fp32).max())
    runner.close()
    assert old > OLD_TOLERANCE, f"the old check would have passed this export too (max|diff| {old:.2e})"
    # The same graph with the last convolution's bias moved by 0.1 (a logit shift; at most 0.025 after the sigmoid).
    graph = onnx.load(str(out))
    last_conv = [node for node in graph.graph.node if node.op_type == "Conv"][-1]
    bias = next(t for t in graph.graph.initializer if t.name == last_conv.input[2])
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + np.float32(0.1), bias.name))
    onnx.save(graph, str(tmp_path / "perturbed.onnx"))
    wrong = onnx_parity(model, tmp_path / "perturbed.onnx")
    assert not wrong.ok and wrong.onnx > 5 * wrong.tolerance, wrong
