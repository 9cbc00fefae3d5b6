"""A given .onnx file checked before anything runs it: it must parse, hold a valid graph, and take and give a
generator's tensors (see `models.wav2lip.input_shapes`).

Without this, a file that is not ONNX fails inside ONNX Runtime or TensorRT with a protobuf traceback, and a model
of another shape is accepted and fails on the first frame. Here either is a `CheckpointError` naming what the
generator takes and what the file has.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from livemood.backends.export import OUTPUT_NAME
from livemood.logs import first_line
from livemood.models.checkpoint import CheckpointError
from livemood.models.wav2lip import OUTPUT_SHAPE, input_shapes

FLOAT = "float"  # ONNX's name for float32, the only type the runners feed and read
Dims = tuple[int | str, ...]  # an ONNX shape: sizes, or names for symbolic (dynamic) axes


def _tensor(value: onnx.ValueInfoProto) -> tuple[str, Dims] | None:
    """(element type, dims) of a graph input or output; None if it is not a tensor."""
    if not value.type.HasField("tensor_type"):
        return None
    t = value.type.tensor_type
    dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim)
    return onnx.TensorProto.DataType.Name(t.elem_type).lower(), dims


def _describe(name: str, tensor: tuple[str, Dims] | None) -> str:
    if tensor is None:
        return f"{name} (not a tensor)"
    dtype, dims = tensor
    return f"{name} ({', '.join(str(d) for d in dims)}{',' if len(dims) == 1 else ''}) {dtype}"


def _expected(shapes: dict[str, tuple[int, ...]]) -> str:
    return ", ".join(_describe(name, (FLOAT, ("batch", *shape))) for name, shape in shapes.items())


def _fits(tensor: tuple[str, Dims] | None, shape: tuple[int, ...]) -> bool:
    """A float tensor with any batch axis and then `shape`; a symbolic axis takes any size, so it fits."""
    if tensor is None or tensor[0] != FLOAT or len(tensor[1]) != 1 + len(shape):
        return False
    return all(isinstance(got, str) or got == want for got, want in zip(tensor[1][1:], shape, strict=True))


def _takes(found: dict[str, tuple[str, Dims] | None], shapes: dict[str, tuple[int, ...]]) -> bool:
    return found.keys() == shapes.keys() and all(_fits(found[name], shape) for name, shape in shapes.items())


def check_generator_onnx(path: Path) -> None:
    """CheckpointError unless this ONNX file holds a generator, plain or emotion-conditioned."""
    try:
        # The graph's structure only: weights kept in external files are ONNX Runtime's to read.
        model = onnx.load(str(path), load_external_data=False)
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from e
    except DecodeError as e:
        raise CheckpointError(f"{path} is not an ONNX model (it does not parse as one: truncated, or another kind "
                              "of file)") from e
    graph = model.graph
    if not graph.node:
        raise CheckpointError(f"{path} is not an ONNX model (it holds no graph)")
    try:
        onnx.checker.check_model(model)  # every node a known op with valid attributes (0.3 s for the full model)
    except onnx.checker.ValidationError as e:
        raise CheckpointError(f"{path} is not a valid ONNX model: {first_line(e)}") from e
    weights = {init.name for init in graph.initializer}  # IR < 4 also lists the weights among the inputs
    found = {i.name: _tensor(i) for i in graph.input if i.name not in weights}
    if not any(_takes(found, input_shapes(conditioned)) for conditioned in (False, True)):
        plain, emotion = input_shapes(False), input_shapes(True)
        takes = ", ".join(_describe(n, t) for n, t in found.items()) or "nothing"
        extra = {n: s for n, s in emotion.items() if n not in plain}
        raise CheckpointError(f"{path} does not take a generator's inputs: it takes {takes}; a generator takes "
                              f"{_expected(plain)} (an emotion model also {_expected(extra)})")
    output = _tensor(graph.output[0]) if graph.output else None
    if not _fits(output, OUTPUT_SHAPE):
        given = _describe(graph.output[0].name, output) if graph.output else "nothing"
        raise CheckpointError(f"{path} does not give a generator's output: it gives {given}; a generator gives "
                              f"{_expected({OUTPUT_NAME: OUTPUT_SHAPE})}")
