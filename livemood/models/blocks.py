"""The conv blocks Wav2Lip's networks are built from (generator, SyncNet, discriminator), with their names and
shapes as in the original checkpoints."""

from __future__ import annotations

import torch
from torch import nn

# Conv layers as (out channels, kernel, stride, padding, residual); a block's input channels are the previous
# block's output. Channel counts are those of the full-width model.
Layer = tuple[int, int, int | tuple[int, int], int, bool]


class ConvBlock(nn.Module):
    """Conv (or transposed conv) + BatchNorm, plus the input for residual blocks, then ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int | tuple[int, int], padding: int,
                 residual: bool = False, transposed: bool = False) -> None:
        super().__init__()
        if transposed:
            # output_padding 1 makes a stride-2 transposed conv exactly double the size.
            conv: nn.Module = nn.ConvTranspose2d(cin, cout, kernel, stride, padding, output_padding=stride - 1)
        else:
            conv = nn.Conv2d(cin, cout, kernel, stride, padding)
        self.conv_block = nn.Sequential(conv, nn.BatchNorm2d(cout))
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        return self.act(out + x if self.residual else out)


def fold_time(x: torch.Tensor, axis: int) -> torch.Tensor:
    """Fold the time axis into the batch, time-major: (B, …, T at `axis`, …) -> (T·B, …) with step t's batch at
    rows t·B .. t·B + B - 1 (how Wav2Lip trains on T-frame windows)."""
    return torch.cat(x.unbind(axis), dim=0)


def scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


def conv_stack(layers: tuple[Layer, ...], cin: int, width: float, first_transposed: bool = False) -> nn.Sequential:
    blocks = []
    for i, (cout, kernel, stride, padding, residual) in enumerate(layers):
        cout = scaled(cout, width)
        blocks.append(ConvBlock(cin, cout, kernel, stride, padding, residual, first_transposed and i == 0))
        cin = cout
    return nn.Sequential(*blocks)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
