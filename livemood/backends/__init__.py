"""Inference backends behind one interface, and the choice among them.

A runner takes float32 numpy inputs keyed by the ONNX input names (`audio` (B, 1, 80, 16), `face`
(B, 6, 96, 96), plus `emotion` (B, E) and `intensity` (B,) for a conditioned model) and returns `image`
(B, 3, 96, 96) float32 in [0, 1]. Backends: torch (CPU/CUDA), ONNX Runtime (CPU/CUDA), TensorRT (CUDA).

`auto` takes the fastest one this machine can run, in the order TensorRT > ONNX Runtime CUDA > torch CUDA >
ONNX Runtime CPU, and says which and why; landing on the CPU is announced with the reason each GPU backend was
unavailable, never silently.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from livemood.backends.cache import ArtefactCache
from livemood.config import BACKENDS, DEFAULT_BACKEND, UsageError

log = logging.getLogger(__name__)

ONNX_SUFFIX = ".onnx"
EXPORT_FORMAT = "1"  # bump when export_onnx changes what it writes: cached exports are then redone


class Runner(Protocol):
    name: str  # e.g. "onnxruntime CPU", for logs and benchmarks
    device: str  # "cpu" or "cuda"
    conditioned: bool  # takes `emotion` and `intensity`

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Choice:
    backend: str  # one of BACKENDS other than "auto"
    reason: str

    @property
    def cuda(self) -> bool:
        return not self.backend.endswith("-cpu")


def cuda_status() -> str | None:
    """None if torch sees a CUDA GPU, else why not."""
    import torch

    if torch.cuda.is_available():
        return None
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is a CPU-only build"
    return "torch.cuda.is_available() is False (no GPU visible or a driver/CUDA mismatch)"


def unavailable(backend: str) -> str | None:
    """None if `backend` can run here, else why not (one line)."""
    if backend in ("onnxruntime-cpu", "torch-cpu"):
        return None
    cuda = cuda_status()
    if backend == "tensorrt":
        if importlib.util.find_spec("tensorrt") is None:
            return "the tensorrt package is not installed"
        try:
            import tensorrt  # noqa: F401
        except Exception as e:  # a broken install raises anything from ImportError to OSError
            return f"tensorrt does not import: {e}"
        return cuda
    if backend == "onnxruntime":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return f"onnxruntime has no CUDA provider (it has {', '.join(ort.get_available_providers())})"
        return cuda
    if backend == "torch":
        return cuda
    raise ValueError(f"unknown backend {backend!r}")


def choose(requested: str, onnx_only: bool = False) -> Choice:
    """Resolve `requested` (one of BACKENDS) to what will run; UsageError if it cannot run here."""
    if requested not in BACKENDS:
        raise UsageError(f"unknown backend {requested!r}; choose one of: {', '.join(BACKENDS)}")
    if requested != "auto":
        if onnx_only and requested.startswith("torch"):
            raise UsageError("the torch backend needs a checkpoint (.pth), not an ONNX file")
        why = unavailable(requested)
        if why is not None and requested == "tensorrt":
            raise UsageError(f"the tensorrt backend cannot run here: {why}")
        if why is not None:  # onnxruntime / torch: the CPU still works, and the user is told
            log.warning("%s cannot use a GPU (%s): running on the CPU", requested, why)
            return Choice(requested + "-cpu", f"requested, no GPU: {why}")
        return Choice(requested, "requested")
    reasons = []
    for backend, why_fast in (("tensorrt", "a TensorRT fp16 plan, the fastest on NVIDIA GPUs"),
                              ("onnxruntime", "ONNX Runtime on CUDA (TensorRT is unavailable)"),
                              ("torch", "torch on CUDA (TensorRT and ONNX Runtime CUDA are unavailable)")):
        if onnx_only and backend == "torch":
            continue
        why = unavailable(backend)
        if why is None:
            return Choice(backend, why_fast)
        reasons.append(f"{backend}: {why}")
    log.warning("no GPU backend available, running on the CPU (%s)", "; ".join(reasons))
    return Choice("onnxruntime-cpu",
                  "ONNX Runtime is the fastest CPU backend: 1.6-1.9x torch eager for this generator (bench_neural)")


def cached_onnx(weights: Path, cache: ArtefactCache) -> Path:
    """The ONNX export of a checkpoint, made once and kept in the cache keyed by the checkpoint's hash."""
    import torch

    from livemood.atomic import AtomicFile
    from livemood.backends.cache import file_sha256
    from livemood.backends.export import export_onnx
    from livemood.models.wav2lip import load_generator

    key = {"weights_sha256": file_sha256(weights), "torch": torch.__version__, "export_format": EXPORT_FORMAT}
    name = f"{key['weights_sha256'][:16]}{ONNX_SUFFIX}"
    path = cache.lookup(name, key)
    if path is None:
        model = load_generator(weights)  # a refused checkpoint leaves the cache untouched
        log.info("exporting %s to ONNX (once; cached in %s)", weights.name, cache.folder)
        cache.folder.mkdir(parents=True, exist_ok=True)
        staging = AtomicFile(cache.path(name + ".export"))  # a unique name: two runs may export it at once
        try:
            export_onnx(model, staging.tmp)
            path = cache.store(name, key, staging.tmp)
        finally:
            staging.discard()  # already moved into the cache when stored
    return path


def open_runner(weights: Path, requested: str = DEFAULT_BACKEND, cache: ArtefactCache | None = None) -> Runner:
    """A runner for a checkpoint (.pth/.pt/.tar) or an exported .onnx on the requested backend."""
    from livemood.models.checkpoint import CheckpointError

    cache = cache or ArtefactCache()
    try:
        return _open(weights, requested, cache)
    except CheckpointError as e:
        raise UsageError(str(e)) from e


def _open(weights: Path, requested: str, cache: ArtefactCache) -> Runner:
    is_onnx = weights.suffix == ONNX_SUFFIX
    if is_onnx:  # a file from elsewhere: refused here, not by a backend's traceback or on the first frame
        from livemood.backends.onnx_model import check_generator_onnx

        check_generator_onnx(weights)
    choice = choose(requested, onnx_only=is_onnx)
    if choice.backend.startswith("torch"):
        from livemood.backends.torch_runner import TorchRunner
        from livemood.models.wav2lip import load_generator

        runner: Runner = TorchRunner(load_generator(weights), "cuda" if choice.cuda else "cpu")
    else:
        onnx = weights if is_onnx else cached_onnx(weights, cache)
        if choice.backend == "tensorrt":
            from livemood.backends.tensorrt_runner import TensorRTRunner

            runner = TensorRTRunner(onnx, cache)
        else:
            from livemood.backends.onnxruntime_runner import OrtRunner

            runner = OrtRunner(onnx, cuda=choice.cuda)
    log.info("neural backend: %s (%s)", runner.name, choice.reason)
    return runner
