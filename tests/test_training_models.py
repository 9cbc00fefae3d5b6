"""SyncNet_color and its scores, the quality discriminator, and the emotion loss's path to the generator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from livemood.models.blocks import parameter_count
from livemood.models.checkpoint import CheckpointError, save_checkpoint
from livemood.models.discriminator import QualityDiscriminator
from livemood.models.expression import ExpressionClassifier
from livemood.models.syncnet import SCORE_OFFSETS, SyncNet, load_syncnet, lower_halves, sync_loss, sync_scores
from livemood.models.wav2lip import SLIM_WIDTH, EmotionWav2Lip
from livemood.training.losses import EmotionLoss, full_face_mask

from .test_models import KEYS_FILE, randomised

SYNCNET_PARAMETERS = 16_435_072  # the original SyncNet_color's count


def test_syncnet_matches_the_original_names_and_shapes(tmp_path: Path) -> None:
    reference = json.loads(KEYS_FILE.read_text())["syncnet_color"]
    net = SyncNet()
    assert {k: list(v.shape) for k, v in net.state_dict().items()} == reference
    assert list(net.state_dict()) == list(reference) and parameter_count(net) == SYNCNET_PARAMETERS
    randomised(net)
    save_checkpoint(tmp_path / "sync.pth", net)
    loaded = load_syncnet(tmp_path / "sync.pth")
    audio, face = torch.randn(2, 1, 80, 16), torch.rand(2, 15, 48, 96)
    with torch.no_grad():
        for x, y in zip(loaded(audio, face), net.eval()(audio, face), strict=True):
            torch.testing.assert_close(x, y, rtol=0, atol=0)
            torch.testing.assert_close(x.norm(dim=1), torch.ones(2))
    save_checkpoint(tmp_path / "gen.pth", EmotionWav2Lip(SLIM_WIDTH))
    with pytest.raises(CheckpointError, match="not a SyncNet_color"):
        load_syncnet(tmp_path / "gen.pth")


def test_lower_halves_stack_frames_on_channels() -> None:
    frames = torch.rand(2, 3, 5, 96, 96)
    stacked = lower_halves(frames)
    assert stacked.shape == (2, 15, 48, 96)
    torch.testing.assert_close(stacked[:, 6:9], frames[:, :, 2, 48:])


class IndexNet(nn.Module):
    """A stand-in expert that embeds *which* frame a crop or window is (encoded in its mean value) on a circle:
    crops and windows with the same index get the same embedding, so the scores' offset search can be checked."""

    def forward(self, audio: torch.Tensor, face: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        def embed(x: torch.Tensor) -> torch.Tensor:
            angle = x.flatten(1).mean(dim=1) * 40.0
            return torch.stack([angle.cos(), angle.sin()], dim=1)

        return embed(audio), embed(face)


def test_sync_scores_find_the_offset_where_audio_and_video_agree() -> None:
    n = 80
    level = np.linspace(0.1, 0.9, n)
    crops = np.repeat(np.round(level * 255)[:, None, None, None], 96 * 96 * 3, axis=1).reshape(n, 96, 96, 3)
    crops = crops.astype(np.uint8)
    # The IndexNet's face embedding of window i is the mean of its 5 frames' lower halves.
    face_level = np.array([np.round(level[i:i + 5] * 255).mean() / 255 for i in range(n)])
    in_sync = np.repeat(face_level[:, None, None], 80 * 16, axis=1).reshape(n, 80, 16).astype(np.float32)
    best, confidence = sync_scores(IndexNet(), crops, in_sync)
    assert best < 1e-3 and confidence > 0.3
    shifted = np.roll(in_sync, 4, axis=0)  # audio 4 frames late: still found within the ±15-frame search
    best_shifted, _ = sync_scores(IndexNet(), crops, shifted)
    assert best_shifted < 0.05
    noise = np.random.default_rng(0).permutation(in_sync)  # no alignment anywhere
    best_noise, confidence_noise = sync_scores(IndexNet(), crops, noise)
    assert best_noise > 10 * best_shifted and confidence_noise < confidence
    with pytest.raises(ValueError, match="frames"):
        sync_scores(IndexNet(), crops[: 2 * SCORE_OFFSETS], in_sync[: 2 * SCORE_OFFSETS])


def test_sync_loss_is_low_for_matching_embeddings() -> None:
    frames = torch.full((1, 3, 5, 96, 96), 0.5)
    audio = torch.full((1, 1, 80, 16), 0.5)
    assert float(sync_loss(IndexNet(), audio, frames)) < 1e-3
    assert float(sync_loss(IndexNet(), audio + 0.04, frames)) > 0.1


@pytest.mark.parametrize("full_face", [False, True])
def test_discriminator_judges_its_region(full_face: bool) -> None:
    disc = QualityDiscriminator(full_face).eval()
    faces = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        p = disc(faces)
        assert p.shape == (2, 1) and torch.all((p > 0) & (p < 1))
        changed = faces.clone()
        changed[:, :, :40] = 0.0  # the upper part only
        moved = (disc(changed) - p).abs().max()
    assert (moved > 0) == full_face  # the lower-half model never sees the upper half
    assert disc(torch.rand(2, 3, 4, 96, 96)).shape == (8, 1)


def test_full_face_mask_hides_the_face_not_the_corners() -> None:
    mask = full_face_mask()
    assert mask.shape == (96, 96) and mask[50, 48] == 1 and mask[30, 48] == 1 and mask[80, 48] == 1
    assert mask[0, 0] == 0 and mask[0, 95] == 0 and mask[95, 0] == 0


def test_emotion_loss_reaches_the_generator_and_leaves_the_classifier_alone(media: Path) -> None:
    from .conftest import read_frames

    classifier = ExpressionClassifier()
    before = {k: v.clone() for k, v in classifier.net.state_dict().items()}
    loss_fn = EmotionLoss(classifier.net)
    generator = randomised(EmotionWav2Lip(SLIM_WIDTH)).train()
    frames = read_frames(media / "talk_b.mp4", 2)
    crops = torch.from_numpy(np.stack([f[100:196, 100:196] for f in frames])).float().div(255).permute(0, 3, 1, 2)
    face = torch.cat([crops * torch.cat([torch.ones(48), torch.zeros(48)]).view(1, 1, 96, 1), crops], dim=1)
    emotion = F.one_hot(torch.tensor([1, 2]), 8).float()  # happy, sad
    out = generator(torch.randn(2, 1, 80, 16), face, emotion, torch.ones(2))
    loss = loss_fn(out, emotion)
    assert 0.0 <= float(loss.detach()) <= 1.0
    loss.backward()
    grads = [p.grad for p in generator.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0
    for grad in (generator.film[-1].weight.grad, generator.output_block[1].weight.grad):  # conditioning and output
        assert grad is not None and float(grad.abs().sum()) > 0
    assert all(p.grad is None for p in classifier.net.parameters())
    assert all(torch.equal(v, classifier.net.state_dict()[k]) for k, v in before.items())
