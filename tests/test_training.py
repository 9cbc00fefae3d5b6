"""`livemood train` end to end on the shared clips with small generators: the loss goes down, checkpoints load
into the neural engine and `evaluate --weights`, a run resumes where it stopped, and two CPU processes train
together through torchrun (DistributedDataParallel over gloo)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from livemood.cli import main
from livemood.models.checkpoint import save_checkpoint
from livemood.models.syncnet import SyncNet
from livemood.models.wav2lip import EmotionWav2Lip, load_generator
from livemood.training.data import TalkingFaceDataset, TrainingClip, preprocess, scan
from livemood.training.train import Process, TrainConfig, Trainer, checkpoint_path, train

from .test_models import randomised

WIDTH = 0.25  # a quarter-width generator keeps CPU steps around a second


@pytest.fixture(scope="module")
def data(media: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two shared clips in MEAD's simple layout, a shared preprocessing cache and random SyncNet weights."""
    root = tmp_path_factory.mktemp("train")
    videos = root / "videos"
    for clip, emotion, level in (("talk_c", "happy", 3), ("talk_e", "sad", 2)):
        folder = videos / "P01" / emotion / f"level_{level}"
        folder.mkdir(parents=True)
        (folder / "001.mp4").symlink_to(media / f"{clip}.mp4")
    save_checkpoint(root / "syncnet.pth", randomised(SyncNet(), seed=7))
    preprocess(scan(videos), root / "cache", progress=False)
    return {"videos": videos, "cache": root / "cache", "syncnet": root / "syncnet.pth", "root": root}


def losses(out: Path) -> list[dict[str, str]]:
    with open(out / "losses.csv") as f:
        return list(csv.DictReader(f))


def test_training_runs_every_term_checkpoints_and_resumes(data: dict[str, Path], tmp_path: Path) -> None:
    config = TrainConfig(data=data["videos"], out=tmp_path / "run", cache=data["cache"], width=WIDTH,
                         syncnet=data["syncnet"], steps=6, batch=2, checkpoint_every=3, log_every=1)
    last = train(config)
    assert last == checkpoint_path(config.out, 6) and checkpoint_path(config.out, 3).exists()
    assert checkpoint_path(config.out, 6, disc=True).exists()
    rows = losses(config.out)
    assert [int(r["step"]) for r in rows] == list(range(1, 7))
    assert all(r["sync"] and r["gan"] and r["emotion"] and r["disc"] for r in rows), "every loss term is on"
    model = load_generator(last)
    assert isinstance(model, EmotionWav2Lip) and model.width == WIDTH
    # Resume: the step count, optimiser and discriminator continue; the loss log is appended to.
    resumed = TrainConfig(data=data["videos"], out=config.out, cache=data["cache"], width=WIDTH,
                          syncnet=data["syncnet"], steps=8, batch=2, checkpoint_every=3, log_every=1, resume=last)
    assert train(resumed) == checkpoint_path(config.out, 8)
    assert [int(r["step"]) for r in losses(config.out)][-2:] == [7, 8]


def test_training_lowers_the_loss(data: dict[str, Path], tmp_path: Path) -> None:
    """The full objective on one fixed batch of real windows: the reconstruction error falls."""
    config = TrainConfig(data=data["videos"], out=tmp_path, cache=data["cache"], width=WIDTH,
                         syncnet=data["syncnet"], lr=3e-3, batch=2)
    dataset = TalkingFaceDataset([TrainingClip.load(p) for p in sorted(data["cache"].glob("*.npz"))])
    batch = {k: torch.stack([dataset[i][k] for i in (0, len(dataset) // 2)]) for k in dataset[0]}
    trainer = Trainer(config, Process(0, 1, torch.device("cpu")))
    l1 = [trainer.step(batch)["l1"] for _ in range(12)]
    assert sum(l1[-3:]) / 3 < 0.9 * sum(l1[:3]) / 3, f"L1 did not go down: {l1}"


def test_checkpoint_runs_in_the_neural_engine_and_evaluates(data: dict[str, Path], media: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    config = TrainConfig(data=data["videos"], out=tmp_path / "run", cache=data["cache"], width=WIDTH, steps=2,
                         batch=2, log_every=1)
    checkpoint = train(config)
    assert checkpoint is not None
    monkeypatch.setenv("LIVEMOOD_ENGINE_DIR", str(tmp_path / "artefacts"))
    out = tmp_path / "eval.mp4"
    code = main(["evaluate", "--weights", str(checkpoint), "--source", str(media / "talk_d.mp4"), "--output",
                 str(out), "--emotion", "happy", "--syncnet", str(data["syncnet"]), "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["frames"]["match"] and report["frames"]["output"] == 175
    scores = report["checkpoint"]
    assert scores["sync_distance_output"] is not None and scores["sync_confidence_output"] >= 0
    assert scores["sharpness_ratio"] > 0 and scores["face_psnr_db"] > 0


def test_two_processes_train_together_with_torchrun(data: dict[str, Path], tmp_path: Path) -> None:
    torchrun = Path(sys.executable).with_name("torchrun")
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "livemood", "train", "--data",
         str(data["videos"]), "--cache", str(data["cache"]), "--out", str(out), "--width", str(WIDTH), "--steps", "2",
         "--batch", "4", "--log-every", "1", "--device", "cpu"],
        capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert [int(r["step"]) for r in losses(out)] == [1, 2], "one log row per step: only rank 0 writes"
    model = load_generator(checkpoint_path(out, 2))
    assert isinstance(model, EmotionWav2Lip)
