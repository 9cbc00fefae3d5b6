"""The generator: exact Wav2Lip state-dict compatibility, safe loading with precise errors, the conditioned model's
zero-initialised equivalence with Wav2Lip, and the slim variant."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from livemood.models.blocks import parameter_count
from livemood.models.checkpoint import CheckpointError, save_checkpoint
from livemood.models.wav2lip import SLIM_WIDTH, EmotionWav2Lip, Wav2Lip, load_generator

KEYS_FILE = Path(__file__).resolve().parents[1].parent / "shared" / "notes" / "wav2lip_state_keys.json"
WAV2LIP_PARAMETERS = 36_298_035  # the original generator's count


@pytest.fixture(scope="module")
def reference_shapes() -> dict[str, list[int]]:
    if not KEYS_FILE.exists():
        pytest.fail(f"the Wav2Lip state-key file is missing: {KEYS_FILE}")
    return json.loads(KEYS_FILE.read_text())["wav2lip_generator"]


def inputs(batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 1, 80, 16, generator=g) * 8 - 4, torch.rand(batch, 6, 96, 96, generator=g)


def randomised(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial weights and BatchNorm statistics, so equalities below are not equalities of zeros."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + 0.5 if "running_var" in name
                        else torch.randn(t.shape, generator=g) * 0.05)
    return model.eval()


def test_state_dict_matches_wav2lip_names_and_shapes(reference_shapes: dict[str, list[int]]) -> None:
    state = Wav2Lip().state_dict()
    assert list(state) == list(reference_shapes)
    assert {k: list(v.shape) for k, v in state.items()} == reference_shapes
    assert parameter_count(Wav2Lip()) == WAV2LIP_PARAMETERS


def test_forward_shapes_and_time_folding() -> None:
    model = randomised(Wav2Lip(SLIM_WIDTH))
    audio, face = inputs(2)
    with torch.no_grad():
        out = model(audio, face)
        assert out.shape == (2, 3, 96, 96) and out.min() >= 0.0 and out.max() <= 1.0
        # (B, T, 1, 80, 16) and (B, 6, T, 96, 96): each time step is the 4-D call on that step.
        audio5 = torch.stack([audio, audio.flip(0)], dim=1)
        face5 = torch.stack([face, face.flip(0)], dim=2)
        out5 = model(audio5, face5)
    assert out5.shape == (2, 3, 2, 96, 96)
    torch.testing.assert_close(out5[:, :, 0], out)
    torch.testing.assert_close(out5[:, :, 1], out.flip(0))


def test_original_checkpoint_format_round_trip(tmp_path: Path) -> None:
    model = randomised(Wav2Lip(SLIM_WIDTH))
    path = tmp_path / "ckpt.pth"
    # Wav2Lip's trainer saves a DataParallel model: every key prefixed `module.`, next to optimizer and step.
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "optimizer": None,
                "global_step": 7, "global_epoch": 1}, path)
    loaded = load_generator(path)
    assert type(loaded) is Wav2Lip and loaded.width == SLIM_WIDTH and not loaded.training
    audio, face = inputs()
    with torch.no_grad():
        torch.testing.assert_close(loaded(audio, face), model(audio, face), rtol=0, atol=0)


def test_slim_variant_is_a_quarter_of_the_parameters(tmp_path: Path) -> None:
    slim = Wav2Lip(SLIM_WIDTH)
    assert 8.5e6 < parameter_count(slim) < 9.5e6
    save_checkpoint(tmp_path / "slim.pth", slim)
    assert load_generator(tmp_path / "slim.pth").width == SLIM_WIDTH


@pytest.mark.parametrize("case", ["missing", "shape", "extra"])
def test_wrong_checkpoint_names_the_first_bad_tensor(tmp_path: Path, case: str) -> None:
    state = Wav2Lip(SLIM_WIDTH).state_dict()
    name = "audio_encoder.3.conv_block.0.weight"
    if case == "missing":
        del state[name]
    elif case == "shape":
        state[name] = torch.zeros(1, 2, 3, 3)
    else:
        state["discriminator.0.weight"] = torch.zeros(1)
        name = "discriminator.0.weight"
    save_checkpoint(tmp_path / "bad.pth", Wav2Lip(SLIM_WIDTH))
    torch.save({"state_dict": state}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
        load_generator(tmp_path / "bad.pth")


def test_files_that_are_not_checkpoints_are_refused(tmp_path: Path) -> None:
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="weights_only"):
        load_generator(tmp_path / "text.pth")
    torch.save({"epoch": 3}, tmp_path / "dict.pth")
    with pytest.raises(CheckpointError, match="no state dict"):
        load_generator(tmp_path / "dict.pth")


def test_conditioned_model_reproduces_wav2lip(tmp_path: Path) -> None:
    plain = randomised(Wav2Lip(SLIM_WIDTH))
    save_checkpoint(tmp_path / "plain.pth", plain)
    conditioned = load_generator(tmp_path / "plain.pth", conditioned=True)
    assert isinstance(conditioned, EmotionWav2Lip)
    audio, face = inputs(3)
    emotion = torch.softmax(torch.randn(3, conditioned.n_emotions), dim=1)
    intensity = torch.tensor([0.0, 0.5, 1.0])
    with torch.no_grad():
        want = plain(audio, face)
        # Freshly initialised FiLM: exactly Wav2Lip at every intensity.
        torch.testing.assert_close(conditioned(audio, face, emotion, intensity), want, rtol=0, atol=0)
        for layer in conditioned.film:
            layer.weight.normal_(0.0, 0.5)
            layer.bias.normal_(0.0, 0.5)
        out = conditioned(audio, face, emotion, intensity)
    # Trained FiLM: intensity 0 is still exactly Wav2Lip, other intensities change the face.
    torch.testing.assert_close(out[0], want[0], rtol=0, atol=0)
    assert (out[1:] - want[1:]).abs().max() > 1e-4  # outputs of these small random weights stay near 0.5
    # The conditioned model's own checkpoint loads back as a conditioned model.
    save_checkpoint(tmp_path / "cond.pth", conditioned)
    again = load_generator(tmp_path / "cond.pth")
    assert isinstance(again, EmotionWav2Lip)
    with torch.no_grad():
        torch.testing.assert_close(again(audio, face, emotion, intensity), out, rtol=0, atol=0)
