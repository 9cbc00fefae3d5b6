"""The Wav2Lip generator, its emotion-conditioned and slim variants, and loading one from a checkpoint.

Parameter names and shapes follow the original Wav2Lip checkpoints exactly, so their `state_dict`s load unchanged
(the list is in ../shared/notes/wav2lip_state_keys.json and checked by the tests). Tensors:

* audio (B, 1, 80, 16): the mel window of the frame (audio.mel_window), values in [-4, 4];
* face (B, 6, 96, 96): channels 0-2 the target crop with rows 48-95 zeroed, channels 3-5 a reference crop of the
  same person; BGR in [0, 1];
* output (B, 3, 96, 96): the generated crop, BGR in [0, 1].

A 5-D input (B, C, T, H, W) for the face and (B, T, 1, 80, 16) for the audio is folded into the batch and the
output unfolded again, as training on T consecutive frames needs.

`EmotionWav2Lip` adds FiLM on every decoder level: feature x becomes x·(1 + s·γ) + s·β, where (γ, β) is a linear
function of the emotion weights (B, E) and s the intensity (B,). The FiLM layers start at zero, and at intensity 0
the product vanishes whatever they hold, so a plain Wav2Lip checkpoint loaded into it reproduces Wav2Lip exactly.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from livemood.config import EMOTIONS
from livemood.models.blocks import ConvBlock, Layer, conv_stack, fold_time, parameter_count, scaled
from livemood.models.checkpoint import CheckpointError, check_state_dict, read_state_dict

log = logging.getLogger(__name__)

FACE_SIZE = 96  # pixels, crop side
MEL_SHAPE = (80, 16)  # mel bands x mel frames per window
OUTPUT_SHAPE = (3, FACE_SIZE, FACE_SIZE)  # the generated crop after the batch axis, BGR in [0, 1]
SLIM_WIDTH = 0.5  # channel multiplier of the CPU-friendly variant
FILM_PREFIX = "film."  # parameters of the emotion conditioning; absent from plain Wav2Lip checkpoints
FIRST_KEY = "face_encoder_blocks.0.0.conv_block.0.weight"  # (16·width, 6, 7, 7): tells the width

# Conv layers (see blocks.Layer); channel counts are those of the full-width model.
FACE_ENCODER: tuple[tuple[Layer, ...], ...] = (
    ((16, 7, 1, 3, False),),  # 96
    ((32, 3, 2, 1, False), (32, 3, 1, 1, True), (32, 3, 1, 1, True)),  # 48
    ((64, 3, 2, 1, False), (64, 3, 1, 1, True), (64, 3, 1, 1, True), (64, 3, 1, 1, True)),  # 24
    ((128, 3, 2, 1, False), (128, 3, 1, 1, True), (128, 3, 1, 1, True)),  # 12
    ((256, 3, 2, 1, False), (256, 3, 1, 1, True), (256, 3, 1, 1, True)),  # 6
    ((512, 3, 2, 1, False), (512, 3, 1, 1, True)),  # 3
    ((512, 3, 1, 0, False), (512, 1, 1, 0, False)),  # 1
)
AUDIO_ENCODER: tuple[Layer, ...] = (
    (32, 3, 1, 1, False), (32, 3, 1, 1, True), (32, 3, 1, 1, True),  # 80 x 16
    (64, 3, (3, 1), 1, False), (64, 3, 1, 1, True), (64, 3, 1, 1, True),  # 27 x 16
    (128, 3, 3, 1, False), (128, 3, 1, 1, True), (128, 3, 1, 1, True),  # 9 x 6
    (256, 3, (3, 2), 1, False), (256, 3, 1, 1, True),  # 3 x 3
    (512, 3, 1, 0, False), (512, 1, 1, 0, False),  # 1 x 1
)
# Decoder levels: the first layer of levels 1-6 is a transposed conv that doubles the size (level 1: 1 -> 3).
# Each level's output is concatenated with the face encoder's feature of the same size before the next level.
FACE_DECODER: tuple[tuple[Layer, ...], ...] = (
    ((512, 1, 1, 0, False),),  # 1
    ((512, 3, 1, 0, False), (512, 3, 1, 1, True)),  # 3
    ((512, 3, 2, 1, False), (512, 3, 1, 1, True), (512, 3, 1, 1, True)),  # 6
    ((384, 3, 2, 1, False), (384, 3, 1, 1, True), (384, 3, 1, 1, True)),  # 12
    ((256, 3, 2, 1, False), (256, 3, 1, 1, True), (256, 3, 1, 1, True)),  # 24
    ((128, 3, 2, 1, False), (128, 3, 1, 1, True), (128, 3, 1, 1, True)),  # 48
    ((64, 3, 2, 1, False), (64, 3, 1, 1, True), (64, 3, 1, 1, True)),  # 96
)
OUTPUT_HIDDEN = 32  # channels of the output block's 3x3 conv


class Wav2Lip(nn.Module):
    """The Wav2Lip generator; `width` scales every internal channel count (1.0 = the original, 36.3 M params)."""

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        self.width = width
        enc_out = [scaled(level[-1][0], width) for level in FACE_ENCODER]
        self.face_encoder_blocks = nn.ModuleList()
        cin = 6
        for level, cout in zip(FACE_ENCODER, enc_out, strict=True):
            self.face_encoder_blocks.append(conv_stack(level, cin, width))
            cin = cout
        self.audio_encoder = conv_stack(AUDIO_ENCODER, 1, width)
        self.face_decoder_blocks = nn.ModuleList()
        self.decoder_channels: list[int] = []
        cin = scaled(AUDIO_ENCODER[-1][0], width)
        for k, level in enumerate(FACE_DECODER):
            self.face_decoder_blocks.append(conv_stack(level, cin, width, first_transposed=k > 0))
            cout = scaled(level[-1][0], width)
            self.decoder_channels.append(cout)
            cin = cout + enc_out[len(enc_out) - 1 - k]  # concatenated with the encoder feature of that size
        hidden = scaled(OUTPUT_HIDDEN, width)
        self.output_block = nn.Sequential(ConvBlock(cin, hidden, 3, 1, 1), nn.Conv2d(hidden, 3, 1, 1, 0),
                                          nn.Sigmoid())

    def forward(self, audio: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        return self._generate(audio, face, None)

    def _modulate(self, k: int, x: torch.Tensor, condition: tuple[torch.Tensor, torch.Tensor] | None
                  ) -> torch.Tensor:
        return x

    def _generate(self, audio: torch.Tensor, face: torch.Tensor,
                  condition: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        frames = face.size(2) if face.dim() == 5 else 0
        if frames:  # (B, C, T, H, W) -> (T·B, C, H, W), time-major as the audio (B, T, 1, 80, 16) folds
            batch = face.size(0)
            audio, face = fold_time(audio, 1), fold_time(face, 2)
            if condition is not None:
                condition = (condition[0].repeat(frames, 1), condition[1].repeat(frames))
        x = self.audio_encoder(audio)  # (B, 512·w, 1, 1)
        features = []
        f = face
        for block in self.face_encoder_blocks:
            f = block(f)
            features.append(f)
        for k, block in enumerate(self.face_decoder_blocks):
            x = self._modulate(k, block(x), condition)
            x = torch.cat((x, features[-1 - k]), dim=1)
        out = self.output_block(x)  # (T·B, 3, 96, 96)
        if frames:
            out = torch.stack(torch.split(out, batch, dim=0), dim=2)  # (B, 3, T, 96, 96)
        return out


class EmotionWav2Lip(Wav2Lip):
    """One generator for every emotion: Wav2Lip with FiLM on the decoder, driven by emotion weights x intensity.

    forward(audio, face, emotion (B, E) weights over `config.EMOTIONS`, intensity (B,)) -> (B, 3, 96, 96).
    """

    def __init__(self, width: float = 1.0, n_emotions: int = len(EMOTIONS)) -> None:
        super().__init__(width)
        self.n_emotions = n_emotions
        self.film = nn.ModuleList(nn.Linear(n_emotions, 2 * c) for c in self.decoder_channels)
        for layer in self.film:  # zero: the conditioned model starts as exactly the plain one
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, audio: torch.Tensor, face: torch.Tensor, emotion: torch.Tensor, intensity: torch.Tensor
                ) -> torch.Tensor:
        return self._generate(audio, face, (emotion, intensity))

    def _modulate(self, k: int, x: torch.Tensor, condition: tuple[torch.Tensor, torch.Tensor] | None
                  ) -> torch.Tensor:
        assert condition is not None
        emotion, intensity = condition
        gamma, beta = self.film[k](emotion).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)  # (B, C, 1, 1) each
        s = intensity.reshape(-1, 1, 1, 1)
        return x * (1.0 + s * gamma) + s * beta


def input_shapes(conditioned: bool, n_emotions: int = len(EMOTIONS)) -> dict[str, tuple[int, ...]]:
    """The generator's inputs in `forward`'s order, each with its shape after the batch axis (also the ONNX
    export's input names and shapes): audio (1, 80, 16), face (6, 96, 96), emotion (E,), intensity ()."""
    shapes = {"audio": (1, *MEL_SHAPE), "face": (6, FACE_SIZE, FACE_SIZE)}
    if conditioned:
        shapes |= {"emotion": (n_emotions,), "intensity": ()}
    return shapes


def input_names(model: Wav2Lip) -> list[str]:
    """The generator's inputs in `forward`'s order (also the ONNX export's input names)."""
    return list(input_shapes(isinstance(model, EmotionWav2Lip)))


def build_generator(state: dict[str, torch.Tensor], conditioned: bool = False, source: str = "state dict"
                    ) -> Wav2Lip:
    """The generator these weights belong to (width from the first conv, FiLM if present), weights loaded, in
    eval mode. `conditioned=True` puts a plain Wav2Lip state into the emotion-conditioned model (FiLM at zero)."""
    if FIRST_KEY not in state:
        raise CheckpointError(f"{source}: missing tensor {FIRST_KEY!r}: not a Wav2Lip generator")
    width = state[FIRST_KEY].shape[0] / FACE_ENCODER[0][0][0]
    has_film = any(k.startswith(FILM_PREFIX) for k in state)
    if has_film:
        n_emotions = state[f"{FILM_PREFIX}0.weight"].shape[1] if f"{FILM_PREFIX}0.weight" in state else 0
        model: Wav2Lip = EmotionWav2Lip(width, n_emotions)
    elif conditioned:
        model = EmotionWav2Lip(width)
        state = {**{k: v for k, v in model.state_dict().items() if k.startswith(FILM_PREFIX)}, **state}
    else:
        model = Wav2Lip(width)
    check_state_dict(model, state, source)
    model.load_state_dict(state)
    return model.eval()


def load_generator(path: Path | str, conditioned: bool = False) -> Wav2Lip:
    """A generator from a Wav2Lip or livemood checkpoint file; see `build_generator`."""
    path = Path(path)
    model = build_generator(read_state_dict(path), conditioned, str(path))
    log.debug("loaded %s (width %g, %.1f M parameters) from %s", type(model).__name__, model.width,
              parameter_count(model) / 1e6, path)
    return model
