"""The ONNX Runtime backend: an exported generator on the CPU or through CUDA."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as _state

from livemood.logs import first_line
from livemood.models.checkpoint import CheckpointError

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
_REFUSED = (_state.Fail, _state.InvalidGraph, _state.InvalidProtobuf, _state.NotImplemented, _state.InvalidArgument)


class OrtRunner:
    """Runs an ONNX generator; inputs and output are float32 numpy arrays (see `backends.Runner`)."""

    def __init__(self, onnx_path: Path, cuda: bool = False, threads: int = 0) -> None:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads  # 0 = one per physical core
        providers = [CUDA, CPU] if cuda else [CPU]
        try:
            self.session = ort.InferenceSession(str(onnx_path), options, providers=providers)
        except _REFUSED as e:  # a graph that parses but ONNX Runtime cannot build (an unknown op, a broken node)
            raise CheckpointError(f"ONNX Runtime cannot load {onnx_path}: {first_line(e)}") from e
        active = self.session.get_providers()[0]
        if cuda and active != CUDA:
            log.warning("ONNX Runtime could not use CUDA (active providers: %s): running on the CPU",
                        ", ".join(self.session.get_providers()))
        self.device = "cuda" if active == CUDA else "cpu"
        self.name = f"onnxruntime {self.device.upper()}"
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.conditioned = "emotion" in self.input_names
        self.output_name = self.session.get_outputs()[0].name

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run([self.output_name], {n: inputs[n] for n in self.input_names})[0]

    def close(self) -> None:
        self.session = None
