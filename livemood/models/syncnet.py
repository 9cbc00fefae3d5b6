"""SyncNet_color, Wav2Lip's lip-sync expert, and the sync scores built on it.

Parameter names and shapes follow the original `syncnet_color` checkpoints (../shared/notes/wav2lip_state_keys.json),
so its `state_dict`s load unchanged. Tensors:

* face (B, 15, 48, 96): the lower halves of 5 consecutive 96x96 crops, channels stacked frame by frame (BGR in
  [0, 1], as the generator's output is);
* audio (B, 1, 80, 16): the mel window that starts at the first of those frames;
* output: two L2-normalised 512-d embeddings (audio, face). In sync their cosine similarity is high.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from livemood.models.blocks import Layer, conv_stack
from livemood.models.checkpoint import CheckpointError, check_state_dict, read_state_dict

SYNC_FRAMES = 5  # video frames per SyncNet window (0.2 s at 25 fps, the mel window's length)
SCORE_OFFSETS = 15  # video frames of audio shift tried each way for the LSE-style scores

FACE_LAYERS: tuple[Layer, ...] = (
    (32, 7, 1, 3, False),  # 48 x 96
    (64, 5, (1, 2), 1, False), (64, 3, 1, 1, True), (64, 3, 1, 1, True),  # 46 x 47
    (128, 3, 2, 1, False), (128, 3, 1, 1, True), (128, 3, 1, 1, True), (128, 3, 1, 1, True),  # 23 x 24
    (256, 3, 2, 1, False), (256, 3, 1, 1, True), (256, 3, 1, 1, True),  # 12 x 12
    (512, 3, 2, 1, False), (512, 3, 1, 1, True), (512, 3, 1, 1, True),  # 6 x 6
    (512, 3, 2, 1, False), (512, 3, 1, 0, False), (512, 1, 1, 0, False),  # 3 x 3 -> 1 x 1
)
AUDIO_LAYERS: tuple[Layer, ...] = (
    (32, 3, 1, 1, False), (32, 3, 1, 1, True), (32, 3, 1, 1, True),  # 80 x 16
    (64, 3, (3, 1), 1, False), (64, 3, 1, 1, True), (64, 3, 1, 1, True),  # 27 x 16
    (128, 3, 3, 1, False), (128, 3, 1, 1, True), (128, 3, 1, 1, True),  # 9 x 6
    (256, 3, (3, 2), 1, False), (256, 3, 1, 1, True), (256, 3, 1, 1, True),  # 3 x 3
    (512, 3, 1, 0, False), (512, 1, 1, 0, False),  # 1 x 1
)


class SyncNet(nn.Module):
    """SyncNet_color: (audio (B, 1, 80, 16), face (B, 15, 48, 96)) -> (audio, face) embeddings (B, 512)."""

    def __init__(self) -> None:
        super().__init__()
        self.face_encoder = conv_stack(FACE_LAYERS, 3 * SYNC_FRAMES, 1.0)
        self.audio_encoder = conv_stack(AUDIO_LAYERS, 1, 1.0)

    def forward(self, audio: torch.Tensor, face: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.audio_encoder(audio).flatten(1)
        v = self.face_encoder(face).flatten(1)
        return F.normalize(a, p=2, dim=1), F.normalize(v, p=2, dim=1)


def load_syncnet(path: Path | str) -> SyncNet:
    """SyncNet_color weights from a Wav2Lip-format checkpoint, checked tensor by tensor, in eval mode."""
    model = SyncNet()
    state = read_state_dict(Path(path))
    if "face_encoder.0.conv_block.0.weight" not in state:
        raise CheckpointError(f"{path}: missing tensor 'face_encoder.0.conv_block.0.weight': not a SyncNet_color")
    check_state_dict(model, state, str(path))
    model.load_state_dict(state)
    return model.eval()


def lower_halves(frames: torch.Tensor) -> torch.Tensor:
    """(B, 3, T, 96, 96) crops -> (B, 3T, 48, 96): the lower halves, frame after frame along the channels."""
    lower = frames[:, :, :, frames.size(3) // 2:]
    return torch.cat([lower[:, :, t] for t in range(lower.size(2))], dim=1)


def sync_loss(syncnet: SyncNet, audio: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Wav2Lip's expert sync loss: BCE of the embeddings' cosine similarity against "in sync" (1).

    audio (B, 1, 80, 16) for the window's first frame; frames (B, 3, 5, 96, 96) generated crops.
    """
    a, v = syncnet(audio, lower_halves(frames))
    similarity = F.cosine_similarity(a, v).clamp(1e-7, 1.0 - 1e-7)  # BCE needs (0, 1); ReLU features make it >= 0
    return F.binary_cross_entropy(similarity, torch.ones_like(similarity))


@torch.no_grad()
def sync_scores(syncnet: SyncNet, crops: np.ndarray, mel_windows: np.ndarray, batch: int = 64
                ) -> tuple[float, float]:
    """LSE-D / LSE-C style scores of a talking face with SyncNet_color: (distance, confidence).

    crops (N, 96, 96, 3) uint8 BGR; mel_windows (N, 80, 16), window i starting at frame i. For every 5-frame
    window the embedding distance to the audio shifted by -15..15 frames is averaged over the video; the distance
    is the minimum over shifts (lower is better) and the confidence the median minus that minimum (higher is
    better), as SyncNet's own evaluation defines them. Absolute values differ from the original SyncNet's.
    """
    n = len(crops) - SYNC_FRAMES + 1
    if n <= 2 * SCORE_OFFSETS:
        raise ValueError(f"need more than {2 * SCORE_OFFSETS + SYNC_FRAMES - 1} frames for sync scores, got "
                         f"{len(crops)}")
    faces = torch.from_numpy(crops).float().div(255.0).permute(0, 3, 1, 2)  # (N, 3, 96, 96)
    v_emb, a_emb = [], []
    for s in range(0, n, batch):
        idx = range(s, min(s + batch, n))
        clip = torch.stack([faces[i:i + SYNC_FRAMES].permute(1, 0, 2, 3) for i in idx])  # (b, 3, 5, 96, 96)
        audio = torch.from_numpy(mel_windows[list(idx)]).float()[:, None]
        a, v = syncnet(audio, lower_halves(clip))
        a_emb.append(a)
        v_emb.append(v)
    distance = torch.cdist(torch.cat(v_emb), torch.cat(a_emb))  # (n, n): video window i vs audio window j
    rows = torch.arange(SCORE_OFFSETS, n - SCORE_OFFSETS)
    mean_dist = torch.stack([distance[rows, rows + k].mean() for k in range(-SCORE_OFFSETS, SCORE_OFFSETS + 1)])
    best = float(mean_dist.min())
    return best, float(mean_dist.median()) - best
