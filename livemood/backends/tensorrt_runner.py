"""The TensorRT backend: a plan (the compiled artefact TensorRT calls a serialised engine) built from the exported
ONNX (fp16, one optimisation profile over the batch), cached per ONNX hash, TensorRT version and GPU, run with
preallocated device buffers on torch's CUDA stream.

Building takes tens of seconds to minutes, so it happens once: the plan and its key go to the artefact cache
(`backends.cache`); a cached plan built for another TensorRT version or GPU, or whose bytes no longer match its
recorded hash, is rebuilt, and one TensorRT cannot deserialise is rebuilt once and then refused.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import tensorrt as trt
import torch

from livemood.backends.cache import ArtefactCache, file_sha256

log = logging.getLogger(__name__)

WORKSPACE_BYTES = 2 << 30  # builder scratch memory
MAX_BATCH = 8  # the optimisation profile covers batch 1..MAX_BATCH, tuned for 1 (live)

_TRT_LOGGER = trt.Logger(trt.Logger.WARNING)
_TORCH_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.float16): torch.float16,
                 np.dtype(np.int32): torch.int32, np.dtype(np.int64): torch.int64}


class PlanBuildError(RuntimeError):
    """TensorRT could not build or load a plan for this model; the message says why."""


def plan_key(onnx_path: Path, fp16: bool) -> dict[str, str]:
    """What a plan depends on: the exact ONNX, TensorRT's version, the GPU and its compute capability."""
    major, minor = torch.cuda.get_device_capability()
    return {
        "onnx_sha256": file_sha256(onnx_path),
        "tensorrt": trt.__version__,
        "gpu": torch.cuda.get_device_name(),
        "compute_capability": f"{major}.{minor}",
        "precision": "fp16" if fp16 else "fp32",
        "max_batch": str(MAX_BATCH),
    }


def build_plan(onnx_path: Path, fp16: bool) -> bytes:
    """The serialised plan for this ONNX file: explicit batch, one profile over batch 1..MAX_BATCH."""
    builder = trt.Builder(_TRT_LOGGER)
    network = builder.create_network(0)  # explicit batch (the only mode since TensorRT 10)
    parser = trt.OnnxParser(network, _TRT_LOGGER)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise PlanBuildError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = tuple(tensor.shape)[1:]  # the batch axis is the dynamic one
        profile.set_shape(tensor.name, (1, *shape), (1, *shape), (MAX_BATCH, *shape))
    config.add_optimization_profile(profile)
    log.info("building a TensorRT plan for %s (%s); this takes a while, once", onnx_path.name,
             "fp16" if fp16 else "fp32")
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise PlanBuildError(f"TensorRT failed to build a plan for {onnx_path} (see its log above)")
    return bytes(plan)


def _deserialize(plan: bytes) -> trt.ICudaEngine | None:
    return trt.Runtime(_TRT_LOGGER).deserialize_cuda_engine(plan)


def fp16_available() -> bool:
    """TensorRT 10 lowers an fp32 network to fp16 with a builder flag; TensorRT 11 removed the flag (its networks
    are strongly typed: the ONNX's own types decide)."""
    return hasattr(trt.BuilderFlag, "FP16")


def cached_plan(onnx_path: Path, cache: ArtefactCache, fp16: bool = True) -> trt.ICudaEngine:
    """TensorRT's engine for this ONNX on this GPU, its plan from the cache if it matches, else built and cached."""
    key = plan_key(onnx_path, fp16)
    name = f"{key['onnx_sha256'][:16]}.{'fp16' if fp16 else 'fp32'}.plan"
    path = cache.lookup(name, key)
    if path is not None:
        engine = _deserialize(path.read_bytes())
        if engine is not None:
            log.info("TensorRT plan from the cache: %s", path)
            return engine
        log.warning("TensorRT %s cannot load the cached %s; rebuilding", trt.__version__, path)
    path = cache.store(name, key, build_plan(onnx_path, fp16))
    engine = _deserialize(path.read_bytes())
    if engine is None:
        raise PlanBuildError(f"TensorRT built {path} but cannot load it; delete it and check the TensorRT install")
    return engine


class TensorRTRunner:
    """Runs a TensorRT plan; inputs and output are float32 numpy arrays (see `backends.Runner`).

    Device buffers for the largest batch are allocated once (torch tensors, so torch's allocator and stream are
    shared with the rest of the process); a call copies the inputs in, runs `execute_async_v3` on torch's current
    stream and copies the output back, which synchronises.
    """

    def __init__(self, onnx_path: Path, cache: ArtefactCache, fp16: bool = True) -> None:
        if not torch.cuda.is_available():
            raise PlanBuildError("TensorRT needs a CUDA GPU and torch.cuda.is_available() is False")
        if fp16 and not fp16_available():
            log.warning("TensorRT %s has no fp16 builder flag (strongly typed networks): building an fp32 plan",
                        trt.__version__)
            fp16 = False
        self.trt_engine = cached_plan(onnx_path, cache, fp16)
        self.context = self.trt_engine.create_execution_context()
        self.buffers: dict[str, torch.Tensor] = {}
        self.input_names: list[str] = []
        self.output_name = ""
        for i in range(self.trt_engine.num_io_tensors):
            name = self.trt_engine.get_tensor_name(i)
            shape = (MAX_BATCH, *tuple(self.trt_engine.get_tensor_shape(name))[1:])
            dtype = _TORCH_DTYPES[np.dtype(trt.nptype(self.trt_engine.get_tensor_dtype(name)))]
            self.buffers[name] = torch.empty(shape, dtype=dtype, device="cuda")
            self.context.set_tensor_address(name, self.buffers[name].data_ptr())
            if self.trt_engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self.input_names.append(name)
            else:
                self.output_name = name
        self.conditioned = "emotion" in self.input_names
        self.device = "cuda"
        self.name = f"tensorrt {'fp16' if fp16 else 'fp32'} on {torch.cuda.get_device_name()}"

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        batch = inputs["face"].shape[0]
        if batch > MAX_BATCH:
            raise ValueError(f"batch {batch} exceeds the plan's profile (at most {MAX_BATCH})")
        stream = torch.cuda.current_stream()
        for name in self.input_names:
            # The batch is the leading axis, so the first `batch` rows of a buffer are contiguous at its start.
            self.buffers[name][:batch].copy_(torch.from_numpy(inputs[name]), non_blocking=True)
            self.context.set_input_shape(name, tuple(self.buffers[name][:batch].shape))
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        return self.buffers[self.output_name][:batch].float().cpu().numpy()

    def close(self) -> None:
        self.buffers.clear()
        self.context = None
        self.trt_engine = None
