"""`livemood train`: the Wav2Lip-Emotion generator trained on a folder of talking-face videos.

One process on a GPU or the CPU, or several through torchrun (DistributedDataParallel: NCCL on GPUs, gloo on the
CPU). Rank 0 prepares the data cache (the others wait), logs, and writes checkpoints in Wav2Lip's own format
(`checkpoint_step000001000.pth` for the generator, `disc_checkpoint_step…` for the discriminator), so the neural
engine and Wav2Lip's tools load them; `losses.csv` keeps every logged step.

    livemood train --data VIDEOS --out RUN [--steps N] [--init wav2lip.pth] [--syncnet lipsync_expert.pth]
    torchrun --nproc-per-node 2 -m livemood train --data VIDEOS --out RUN
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from tqdm import tqdm

from livemood.config import UsageError
from livemood.models.checkpoint import (
    CheckpointError,
    check_state_dict,
    load_checkpoint,
    save_checkpoint,
    state_dict_of,
)
from livemood.models.discriminator import QualityDiscriminator
from livemood.models.expression import ExpressionClassifier
from livemood.models.syncnet import SyncNet, load_syncnet, sync_loss
from livemood.models.wav2lip import EmotionWav2Lip, Wav2Lip, load_generator
from livemood.training.data import TalkingFaceDataset, TrainingClip, cache_path, preprocess, scan
from livemood.training.losses import EmotionLoss, LossWeights, full_face_mask

log = logging.getLogger(__name__)

MASKS = ("lower", "full")  # lower half (Wav2Lip), or the whole face (the paper's full-face mask)
ADAM_BETAS = (0.5, 0.999)
LOSS_COLUMNS = ("step", "l1", "sync", "gan", "emotion", "total", "disc")


@dataclass(frozen=True)
class TrainConfig:
    """One training run; built by the CLI, checked once."""

    data: Path  # a folder of talking-face videos with audio (MEAD's layout gives emotion labels and pairs)
    out: Path  # checkpoints and losses.csv
    cache: Path | None = None  # preprocessed clips (default: OUT/cache); reused and resumed across runs
    conditioned: bool = True  # one generator for all emotions (FiLM); False trains a plain Wav2Lip generator
    width: float = 1.0  # channel multiplier (0.5 = the slim CPU variant)
    init: Path | None = None  # generator weights to start from (a plain Wav2Lip loads into the conditioned model)
    syncnet: Path | None = None  # pre-trained SyncNet_color; without it the sync loss is off
    resume: Path | None = None  # a checkpoint of this trainer: weights, optimiser and step continue
    paired: bool = False  # the paper's setting: input from the neutral clip, targets from the same sentence's emotion
    mask: str = "lower"
    steps: int = 1000
    batch: int = 8
    lr: float = 1e-4
    weights: LossWeights = field(default_factory=LossWeights)
    checkpoint_every: int = 500
    log_every: int = 10
    device: str = "auto"  # "auto": this process's GPU if there is one, else the CPU
    workers: int = 0  # DataLoader worker processes
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.data.is_dir():
            raise UsageError(f"training data folder not found: {self.data}")
        for name in ("init", "syncnet", "resume"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise UsageError(f"--{name} file not found: {path}")
        if self.mask not in MASKS:
            raise UsageError(f"--mask must be one of {', '.join(MASKS)}, got {self.mask!r}")
        if self.steps < 1 or self.batch < 1 or self.lr <= 0 or self.checkpoint_every < 1 or self.log_every < 1:
            raise UsageError("--steps, --batch, --checkpoint-every and --log-every must be >= 1 and --lr > 0")
        if not 0 < self.width <= 1:
            raise UsageError(f"--width must be in (0, 1], got {self.width:g}")


@dataclass(frozen=True)
class Process:
    """Where this process sits in a (possibly distributed) run."""

    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def _start_process(requested: str) -> Process:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and requested in ("auto", "cuda")
    if requested == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: torch sees no CUDA GPU")
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1:
        dist.init_process_group("nccl" if cuda else "gloo")
        return Process(dist.get_rank(), world, device)
    return Process(0, 1, device)


def _prepare_data(config: TrainConfig, proc: Process) -> TalkingFaceDataset:
    cache = config.cache or config.out / "cache"
    clips = scan(config.data)
    if not clips:
        raise UsageError(f"no videos found under {config.data}")
    if proc.main:
        preprocess(clips, cache)
    if proc.world > 1:
        dist.barrier()  # the cache is complete before any rank reads it
    paths = [cache_path(info, cache) for info in clips]
    loaded = [TrainingClip.load(p) for p in paths if p.exists()]  # clips that failed to preprocess have none
    if not loaded:
        raise UsageError(f"no clip in {config.data} gave usable training data (see the log above)")
    return TalkingFaceDataset(loaded, paired=config.paired, seed=config.seed)


@contextlib.contextmanager
def _refused_as(option: str) -> Iterator[None]:
    """A checkpoint refused while loading the file given to `option` is the user's error, naming the option."""
    try:
        yield
    except CheckpointError as e:
        raise UsageError(f"{option}: {e}") from e


def _generator(config: TrainConfig) -> Wav2Lip:
    if config.init is not None:
        with _refused_as("--init"):
            model = load_generator(config.init, conditioned=config.conditioned)
        if model.width != config.width:
            log.info("--init has width %g; training that width", model.width)
        return model.train()
    return (EmotionWav2Lip if config.conditioned else Wav2Lip)(config.width).train()


def _batches(loader: DataLoader, sampler: DistributedSampler | RandomSampler) -> Iterator[dict[str, torch.Tensor]]:
    epoch = 0
    while True:
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def _restore(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Load a checkpoint of this trainer into the model and its optimiser (read once); returns its contents.
    CheckpointError, before anything is loaded, if its tensors are not this model's."""
    data = load_checkpoint(path)
    state = state_dict_of(data, str(path))
    check_state_dict(model, state, str(path))
    model.load_state_dict(state)
    if isinstance(data, dict) and data.get("optimizer") is not None:
        try:
            optimizer.load_state_dict(data["optimizer"])
        except (ValueError, KeyError, TypeError) as e:  # torch's own complaints about a mismatched optimiser state
            raise CheckpointError(f"{path}: its optimiser state does not fit this model ({e})") from e
    return data if isinstance(data, dict) else {}


def checkpoint_path(out: Path, step: int, disc: bool = False) -> Path:
    return out / f"{'disc_' if disc else ''}checkpoint_step{step:09d}.pth"


class Trainer:
    """Holds the networks, optimisers and loss terms of one run; `step` does one optimisation step."""

    def __init__(self, config: TrainConfig, proc: Process) -> None:
        self.config, self.proc = config, proc
        dev = proc.device
        generator = _generator(config).to(dev)
        self.conditioned = isinstance(generator, EmotionWav2Lip)
        self.opt_g = torch.optim.Adam(generator.parameters(), lr=config.lr, betas=ADAM_BETAS)
        w = config.weights
        self.syncnet: SyncNet | None = None
        if w.sync > 0 and config.syncnet is not None:
            with _refused_as("--syncnet"):
                self.syncnet = load_syncnet(config.syncnet).to(dev).requires_grad_(False)
        self.emotion: EmotionLoss | None = None
        if w.emotion > 0:
            self.emotion = EmotionLoss(ExpressionClassifier().net).to(dev)
        disc: QualityDiscriminator | None = None
        self.opt_d: torch.optim.Optimizer | None = None
        if w.gan > 0:
            disc = QualityDiscriminator(full_face=config.mask == "full").to(dev).train()
            self.opt_d = torch.optim.Adam(disc.parameters(), lr=config.lr, betas=ADAM_BETAS)
        self.mask = full_face_mask().to(dev) if config.mask == "full" else None
        self.step_count = 0
        if config.resume is not None:
            with _refused_as("--resume"):
                self._resume(generator, disc)
        if self.syncnet is None and w.sync > 0 and proc.main:  # after the checks: a refused file is the only line
            log.warning("sync loss off: no --syncnet weights given (the lip-sync expert must be pre-trained)")
        if proc.world > 1:
            ids = [dev.index] if dev.type == "cuda" else None
            generator = DistributedDataParallel(generator, device_ids=ids)
            disc = DistributedDataParallel(disc, device_ids=ids) if disc is not None else None
        self.generator, self.disc = generator, disc

    def _resume(self, generator: Wav2Lip, disc: QualityDiscriminator | None) -> None:
        path = self.config.resume
        assert path is not None
        self.step_count = int(_restore(path, generator, self.opt_g).get("global_step", 0))
        disc_path = path.with_name("disc_" + path.name)
        if disc is not None and self.opt_d is not None and disc_path.exists():
            _restore(disc_path, disc, self.opt_d)
        if self.proc.main:
            log.info("resumed from %s at step %d", path, self.step_count)

    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One generator step and one discriminator step; returns the loss terms."""
        dev, w = self.proc.device, self.config.weights
        b = {k: v.to(dev, non_blocking=True) for k, v in batch.items()}
        face = b["face"]  # (B, 6, T, 96, 96)
        if self.mask is not None:  # hide the whole face, not only its lower half
            face = torch.cat([face[:, :3] * (1.0 - self.mask), face[:, 3:]], dim=1)
        if self.conditioned:
            generated = self.generator(b["audio"], face, b["emotion"], b["intensity"])
        else:
            generated = self.generator(b["audio"], face)
        terms = {"l1": F.l1_loss(generated, b["target"])}
        if self.syncnet is not None:
            terms["sync"] = sync_loss(self.syncnet, b["sync_audio"], generated)
        if self.disc is not None:
            terms["gan"] = _unwrap(self.disc).loss(generated, real=True)
        if self.emotion is not None:
            terms["emotion"] = self.emotion(generated, b["emotion"])
        total = sum(getattr(w, k) * v for k, v in terms.items())
        self.opt_g.zero_grad(set_to_none=True)
        total.backward()
        self.opt_g.step()
        logged = {k: float(v.detach()) for k, v in terms.items()} | {"total": float(total.detach())}
        if self.disc is not None and self.opt_d is not None:
            # Through the wrapper (not .loss) so DistributedDataParallel averages the discriminator's gradients.
            real = self.disc(b["target"]).clamp(1e-7, 1 - 1e-7)
            fake = self.disc(generated.detach()).clamp(1e-7, 1 - 1e-7)
            d_loss = F.binary_cross_entropy(real, torch.ones_like(real)) + \
                F.binary_cross_entropy(fake, torch.zeros_like(fake))
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
            logged["disc"] = float(d_loss.detach())
        self.step_count += 1
        return logged

    def save(self, epoch: int) -> Path:
        out = self.config.out
        path = checkpoint_path(out, self.step_count)
        save_checkpoint(path, _unwrap(self.generator), self.opt_g, self.step_count, epoch)
        if self.disc is not None:
            save_checkpoint(checkpoint_path(out, self.step_count, disc=True), _unwrap(self.disc), self.opt_d,
                            self.step_count, epoch)
        return path


def train(config: TrainConfig) -> Path | None:
    """Run to `config.steps` total steps (counting resumed ones); returns the last checkpoint (rank 0)."""
    proc = _start_process(config.device)
    try:
        torch.manual_seed(config.seed)
        # The networks first: a refused --init, --syncnet or --resume stops the run before the data is prepared
        # (minutes) or anything is written.
        trainer = Trainer(config, proc)
        if proc.main:
            config.out.mkdir(parents=True, exist_ok=True)
        dataset = _prepare_data(config, proc)
        per_rank = max(1, config.batch // proc.world)
        if len(dataset) < per_rank:
            raise UsageError(f"only {len(dataset)} training windows; need at least a batch of {per_rank}")
        sampler: DistributedSampler | RandomSampler = (
            DistributedSampler(dataset, shuffle=True, seed=config.seed) if proc.world > 1
            else RandomSampler(dataset, generator=torch.Generator().manual_seed(config.seed)))
        loader = DataLoader(dataset, batch_size=per_rank, sampler=sampler, num_workers=config.workers,
                            drop_last=True, pin_memory=proc.device.type == "cuda")
        last: Path | None = None
        csv_file = open(config.out / "losses.csv", "a", newline="") if proc.main else None  # noqa: SIM115
        try:
            writer = csv.DictWriter(csv_file, LOSS_COLUMNS, restval="") if csv_file is not None else None
            if writer is not None and csv_file is not None and csv_file.tell() == 0:
                writer.writeheader()
            bar = tqdm(total=config.steps, initial=trainer.step_count, desc="training", disable=not proc.main)
            batches = _batches(loader, sampler)
            while trainer.step_count < config.steps:
                losses = trainer.step(next(batches))
                bar.update(1)
                step = trainer.step_count
                if proc.main and (step % config.log_every == 0 or step == config.steps):
                    bar.set_postfix({k: f"{v:.4f}" for k, v in losses.items()})
                    assert writer is not None
                    writer.writerow({"step": step, **{k: f"{v:.6f}" for k, v in losses.items()}})
                if proc.main and (step % config.checkpoint_every == 0 or step == config.steps):
                    last = trainer.save(epoch=step * config.batch // len(dataset))
            bar.close()
        finally:
            if csv_file is not None:
                csv_file.close()
        if proc.main and last is not None:
            log.info("last checkpoint: %s", last)
        return last
    finally:
        if proc.world > 1:
            dist.destroy_process_group()
