"""ONNX export of a generator, with a numerical check of ONNX Runtime against torch.

The ONNX graph has inputs `audio` (B, 1, 80, 16) and `face` (B, 6, 96, 96), plus `emotion` (B, E) and
`intensity` (B,) for a conditioned model, and one output `image` (B, 3, 96, 96); the batch axis is dynamic.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from livemood.atomic import AtomicFile, cannot_write
from livemood.models.wav2lip import FACE_SIZE, MEL_SHAPE, EmotionWav2Lip, Wav2Lip, input_names

log = logging.getLogger(__name__)

OPSET = 17
PARITY_TOLERANCE = 1e-4  # max |ONNX Runtime - torch| on outputs in [0, 1]
OUTPUT_NAME = "image"


def example_inputs(model: Wav2Lip, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 inputs in each input's own range, keyed by ONNX input name."""
    rng = np.random.default_rng(seed)
    inputs = {
        "audio": rng.uniform(-4.0, 4.0, (batch, 1, *MEL_SHAPE)),
        "face": rng.uniform(0.0, 1.0, (batch, 6, FACE_SIZE, FACE_SIZE)),
    }
    if isinstance(model, EmotionWav2Lip):
        inputs["emotion"] = rng.dirichlet(np.ones(model.n_emotions), batch)
        inputs["intensity"] = rng.uniform(0.0, 1.0, batch)
    return {k: v.astype(np.float32) for k, v in inputs.items()}


def export_onnx(model: Wav2Lip, out: Path) -> None:
    """Write the model (in eval mode) as ONNX with a dynamic batch axis.

    The file appears whole or not at all (`livemood.atomic`); a write that fails raises RunError with one line.
    """
    names = input_names(model)
    args = tuple(torch.from_numpy(v) for v in example_inputs(model, 1).values())
    axes = {name: {0: "batch"} for name in [*names, OUTPUT_NAME]}
    model.eval()
    try:
        with AtomicFile(out) as tmp, warnings.catch_warnings():
            # The TorchScript-based exporter: deprecated in favour of torch.export, but it needs no extra package
            # and handles this plain convolutional graph exactly.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(model, args, str(tmp), input_names=names, output_names=[OUTPUT_NAME],
                              dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    except OSError as e:
        raise cannot_write(out, e) from e


def onnx_max_diff(model: Wav2Lip, onnx_path: Path, batch: int = 2) -> float:
    """max |ONNX Runtime - torch| over one random batch (on the CPU)."""
    import onnxruntime as ort

    inputs = example_inputs(model, batch, seed=1)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT_NAME], inputs)[0]
    with torch.inference_mode():
        want = model.eval()(*(torch.from_numpy(v) for v in inputs.values())).numpy()
    return float(np.abs(got - want).max())
