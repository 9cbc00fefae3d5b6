"""The torch backend: the generator itself, eager, on the CPU or a CUDA GPU."""

from __future__ import annotations

import numpy as np
import torch

from livemood.models.wav2lip import EmotionWav2Lip, Wav2Lip, input_names


class TorchRunner:
    """Runs a loaded generator; inputs and output are float32 numpy arrays (see `backends.Runner`)."""

    def __init__(self, model: Wav2Lip, device: str = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.conditioned = isinstance(model, EmotionWav2Lip)
        self.input_names = input_names(model)  # the forward's arguments, in order
        self.name = f"torch {self.device.type.upper()}"

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            args = [torch.from_numpy(inputs[n]).to(self.device, non_blocking=True) for n in self.input_names]
            return self.model(*args).float().cpu().numpy()

    def close(self) -> None:
        self.model = self.model.cpu()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
