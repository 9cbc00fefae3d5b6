"""The visual-quality discriminator of Wav2Lip, with the choice of region the Wav2Lip-Emotion paper needed.

Wav2Lip's discriminator judges the lower half of each 96x96 crop (48 x 96), the only part its generator redraws.
A generator trained to change the expression redraws the whole face (the paper's full-face mask), so the
discriminator can judge the whole crop instead: `full_face=True` makes the second block halve both axes (96 x 96 ->
48 x 48) where the lower-half model halves only the width (48 x 96 -> 48 x 48); every later layer and every
parameter name and shape stay those of Wav2Lip's `Wav2Lip_disc_qual`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from livemood.models.blocks import fold_time


class PlainConv(nn.Module):
    """Conv + LeakyReLU, no normalisation (the discriminator's block)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int | tuple[int, int], padding: int) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding))
        self.act = nn.LeakyReLU(0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv_block(x))


class QualityDiscriminator(nn.Module):
    """(B, 3, 96, 96) crops, or (B, 3, T, 96, 96) folded into the batch -> (B·T, 1) probability of "real"."""

    def __init__(self, full_face: bool = False) -> None:
        super().__init__()
        self.full_face = full_face
        first_stride = 2 if full_face else (1, 2)
        self.face_encoder_blocks = nn.ModuleList([
            nn.Sequential(PlainConv(3, 32, 7, 1, 3)),  # 48 x 96 (96 x 96 full face)
            nn.Sequential(PlainConv(32, 64, 5, first_stride, 2), PlainConv(64, 64, 5, 1, 2)),  # 48 x 48
            nn.Sequential(PlainConv(64, 128, 5, 2, 2), PlainConv(128, 128, 5, 1, 2)),  # 24
            nn.Sequential(PlainConv(128, 256, 5, 2, 2), PlainConv(256, 256, 5, 1, 2)),  # 12
            nn.Sequential(PlainConv(256, 512, 3, 2, 1), PlainConv(512, 512, 3, 1, 1)),  # 6
            nn.Sequential(PlainConv(512, 512, 3, 2, 1), PlainConv(512, 512, 3, 1, 1)),  # 3
            nn.Sequential(PlainConv(512, 512, 3, 1, 0), PlainConv(512, 512, 1, 1, 0)),  # 1
        ])
        self.binary_pred = nn.Sequential(nn.Conv2d(512, 1, 1, 1, 0), nn.Sigmoid())

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        if faces.dim() == 5:
            faces = fold_time(faces, 2)
        x = faces if self.full_face else faces[:, :, faces.size(2) // 2:]
        for block in self.face_encoder_blocks:
            x = block(x)
        return self.binary_pred(x).flatten(1)

    def loss(self, faces: torch.Tensor, real: bool) -> torch.Tensor:
        """BCE against "real" (1) or "generated" (0): the discriminator's loss, and with real=True on generated
        faces the generator's adversarial (perceptual) loss."""
        p = self.forward(faces).clamp(1e-7, 1.0 - 1e-7)
        return F.binary_cross_entropy(p, torch.full_like(p, 1.0 if real else 0.0))
