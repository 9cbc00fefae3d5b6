"""Checkpoint files: loaded safely (`weights_only=True`), checked tensor by tensor, written in Wav2Lip's format."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

from livemood.atomic import AtomicFile, cannot_write


class CheckpointError(ValueError):
    """A weights file (a checkpoint, or an exported ONNX model) that is not one of a known architecture, or cannot be
    read; the message names the file and the first problem."""


def load_checkpoint(path: Path) -> object:
    """A checkpoint file's contents, loaded safely (tensors and plain containers only, `weights_only=True`)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as e:  # missing, a folder, unreadable
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from e
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError) as e:
        # torch's message is a paragraph; its unpickler's own complaint is the last non-empty line before the hint.
        lines = [line.strip() for line in str(e).splitlines() if line.strip() and "documentation" not in line]
        raise CheckpointError(f"{path} is not a PyTorch checkpoint of plain tensors (torch.load with "
                              f"weights_only=True refused it: {lines[-1] if lines else type(e).__name__})") from e


def state_dict_of(data: object, source: str) -> dict[str, torch.Tensor]:
    """The model's state dict inside loaded checkpoint contents.

    Accepts Wav2Lip's training checkpoints (a dict with `state_dict`) and bare state dicts; strips the `module.`
    prefix DataParallel adds.
    """
    state = data.get("state_dict", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{source} holds no state dict of tensors (a Wav2Lip checkpoint has 'state_dict')")
    return {k.removeprefix("module."): v for k, v in state.items()}


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of a checkpoint file (see `load_checkpoint` and `state_dict_of`)."""
    return state_dict_of(load_checkpoint(path), str(path))


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise CheckpointError naming the first tensor the model expects that is missing or shaped differently,
    or the first tensor the model does not have."""
    expected = model.state_dict()
    for name, tensor in expected.items():
        if name not in state:
            raise CheckpointError(f"{source}: missing tensor {name!r} (expected shape {tuple(tensor.shape)})")
        if state[name].shape != tensor.shape:
            raise CheckpointError(f"{source}: tensor {name!r} has shape {tuple(state[name].shape)}, "
                                  f"expected {tuple(tensor.shape)}")
    for name in state:
        if name not in expected:
            raise CheckpointError(f"{source}: unexpected tensor {name!r} (not part of {type(model).__name__})")


def save_checkpoint(path: Path | str, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    global_step: int = 0, global_epoch: int = 0) -> None:
    """Write a checkpoint in Wav2Lip's own format (loadable by Wav2Lip's code and by `load_generator`).

    The file appears whole or not at all (`livemood.atomic`); a write that fails raises RunError with one line.
    """
    # torch's zip writer turns a failed write (a full disk) into an opaque RuntimeError: it writes to memory, and
    # the bytes go to the disk here, where the error keeps its errno.
    buffer = io.BytesIO()
    torch.save({
        "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "global_step": global_step,
        "global_epoch": global_epoch,
    }, buffer)
    try:
        with AtomicFile(Path(path)) as tmp:
            tmp.write_bytes(buffer.getbuffer())
    except OSError as e:
        raise cannot_write(Path(path), e) from e
