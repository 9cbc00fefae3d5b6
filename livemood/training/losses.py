"""The Wav2Lip-Emotion objectives beyond L1: the emotion loss with the pre-trained expression classifier, the
full-face input mask, and the loss weights.

Loss = l1·|G - target| + sync·BCE(SyncNet similarity, 1) + gan·BCE(D(G), 1) + emotion·mean(1 - p_target(G)),
with the paper's weights 0.8 / 0.03 / 0.07 / 0.1 by default. A term whose network is missing (no SyncNet weights)
is left out and the others keep their weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from livemood.config import EMOTIONS
from livemood.models.blocks import fold_time
from livemood.models.expression import CLASSES, INPUT_SIZE, TARGET_CLASS, ExpressionNet

BGR_TO_GREY = (0.114, 0.587, 0.299)  # ITU-R BT.601 luma weights for B, G, R (OpenCV's)
# The full-face mask in the 96x96 Wav2Lip crop: an ellipse over brows, eyes, cheeks, mouth and jaw (the crop is
# aligned to the face, so a fixed shape follows it). Centre and half-axes in crop pixels.
FULL_FACE_CENTRE = (48.0, 50.0)
FULL_FACE_HALF_AXES = (44.0, 46.0)


@dataclass(frozen=True)
class LossWeights:
    """The generator's loss weights (the Wav2Lip-Emotion paper's by default; they sum to 1)."""

    l1: float = 0.8
    sync: float = 0.03
    gan: float = 0.07
    emotion: float = 0.1

    def __post_init__(self) -> None:
        if min(self.l1, self.sync, self.gan, self.emotion) < 0:
            raise ValueError("loss weights must be >= 0")


def full_face_mask(size: int = 96) -> torch.Tensor:
    """(size, size) float mask, 1 inside the face ellipse: these pixels are hidden from the generator's input."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64) * (size / 96.0)
    cx, cy = FULL_FACE_CENTRE
    ax, ay = FULL_FACE_HALF_AXES
    return torch.from_numpy((((xs - cx) / ax) ** 2 + ((ys - cy) / ay) ** 2 <= 1.0).astype(np.float32))


def class_targets() -> torch.Tensor:
    """(E, 7): row e is the classifier's class for emotion e (contempt -> disgust, the nearest FER2013 class)."""
    m = torch.zeros(len(EMOTIONS), len(CLASSES))
    for e, name in enumerate(EMOTIONS):
        m[e, CLASSES.index(TARGET_CLASS[name])] = 1.0
    return m


class EmotionLoss(nn.Module):
    """mean(1 - p[target class]) of the frozen expression classifier on the generated crops.

    frames (B, 3, T, 96, 96) or (B, 3, 96, 96), BGR in [0, 1]; emotion (B, E) weights over `config.EMOTIONS`.
    The crops become grey 48x48 in [-1, 1] as the classifier was trained on; gradients flow to the frames only.
    """

    def __init__(self, net: ExpressionNet) -> None:
        super().__init__()
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.register_buffer("grey", torch.tensor(BGR_TO_GREY).view(1, 3, 1, 1))
        self.register_buffer("targets", class_targets())

    def train(self, mode: bool = True) -> EmotionLoss:
        super().train(mode)
        self.net.eval()  # the classifier's BatchNorm statistics stay its own
        return self

    def forward(self, frames: torch.Tensor, emotion: torch.Tensor) -> torch.Tensor:
        if frames.dim() == 5:
            steps = frames.size(2)
            frames = fold_time(frames, 2)
            emotion = emotion.repeat(steps, 1)
        grey = (frames * self.grey).sum(dim=1, keepdim=True)
        small = F.interpolate(grey, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False,
                              antialias=True)
        scores = self.net(small * 2.0 - 1.0)
        p = scores / scores.sum(dim=1, keepdim=True).clamp_min(1e-8)
        return (1.0 - (p * (emotion @ self.targets)).sum(dim=1)).mean()
