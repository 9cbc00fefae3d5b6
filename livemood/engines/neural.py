"""The "neural" engine: a Wav2Lip(-Emotion) generator on the tracked face's 96x96 crop and the frame's mel window.

Per frame: the Wav2Lip box (align.wav2lip_transform) is cropped to 96x96; the generator gets that crop with its
lower half zeroed next to the unmasked crop as the reference (Wav2Lip's own inference pairs each frame with
itself), and the (80, 16) mel window of the frame's time. Its output is pasted back in the blend module's
detail-preserving mode: the frame keeps its full-resolution detail wherever the generator changed little, and takes
the generator's pixels where it changed a lot (the mouth). A plain Wav2Lip model changes the lower face only; an
emotion-conditioned one changes the whole face and follows the emotion and intensity controls, ramped.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from livemood.backends import Runner
from livemood.config import EMOTIONS, Controls
from livemood.controls import Ramp
from livemood.face.align import WAV2LIP_CROP_SIZE, transform_points, warp_crop, wav2lip_transform
from livemood.face.blend import BlendConfig, MaskRegion, face_mask, paste_back
from livemood.face.tracker import Face

log = logging.getLogger(__name__)

MASKED_FROM_ROW = WAV2LIP_CROP_SIZE // 2  # rows 48-95 of the target crop are zeroed: the generator draws them
LOWER_FACE_PASTE = BlendConfig(region=MaskRegion.LOWER_FACE, grow=-0.02, feather=0.15)
FACE_PASTE = BlendConfig(region=MaskRegion.FACE, grow=-0.04, feather=0.15)
VISIBLE = len(EMOTIONS)  # index of the engine's visibility (1 - bypass) in the ramped control vector
EDGE_FADE_PX = 6  # crop pixels over which the paste fades out towards the crop's border (the box cuts the cheeks)


def _edge_fade(size: int, width: int) -> np.ndarray:
    """(size, size) float32: 0 on the border, rising linearly to 1 at `width` pixels inside it."""
    ramp = np.clip(np.minimum(np.arange(size), np.arange(size)[::-1]) / width, 0.0, 1.0).astype(np.float32)
    return np.minimum(ramp[:, None], ramp[None, :])


_EDGE = _edge_fade(WAV2LIP_CROP_SIZE, EDGE_FADE_PX)


def control_vector(controls: Controls) -> np.ndarray:
    """(E + 1,) target: intensity on the chosen emotion's slot; the last slot 1, or 0 when bypassed.

    Ramped from zeros, so the engine's output fades in over the first RAMP_TIME_S, as the warp engine's does.
    """
    target = np.zeros(len(EMOTIONS) + 1)
    target[EMOTIONS.index(controls.emotion)] = controls.intensity
    target[VISIBLE] = 0.0 if controls.bypass else 1.0
    return target


def model_inputs(crop: np.ndarray, window: np.ndarray) -> dict[str, np.ndarray]:
    """Generator inputs for one (96, 96, 3) uint8 BGR crop and its (80, 16) mel window, batch 1."""
    image = crop.astype(np.float32).transpose(2, 0, 1) * np.float32(1.0 / 255.0)  # (3, 96, 96) BGR in [0, 1]
    masked = image.copy()
    masked[:, MASKED_FROM_ROW:] = 0.0
    return {
        "audio": np.ascontiguousarray(window, dtype=np.float32)[None, None],  # (1, 1, 80, 16)
        "face": np.concatenate([masked, image])[None],  # (1, 6, 96, 96)
    }


def emotion_inputs(weights: np.ndarray) -> dict[str, np.ndarray]:
    """`emotion` (1, E) and `intensity` (1,) from ramped per-emotion weights (E,): their sum is the intensity and
    their proportions the emotion mix, so the FiLM term intensity x emotion equals the weights themselves."""
    total = float(weights.sum())
    mix = weights / total if total > 1e-6 else np.eye(len(EMOTIONS))[0]
    return {"emotion": mix.astype(np.float32)[None], "intensity": np.array([total], np.float32)}


def to_crop(image: np.ndarray) -> np.ndarray:
    """(3, 96, 96) float in [0, 1] -> (96, 96, 3) uint8 BGR."""
    return cv2.convertScaleAbs(np.ascontiguousarray(image.transpose(1, 2, 0)), alpha=255.0)


class NeuralEngine:
    """Runs a generator through any backend (see `backends`)."""

    name = "neural"
    needs_face = True
    needs_audio = True

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.name = f"neural ({runner.name})"
        self.ramp = Ramp(len(EMOTIONS) + 1)
        self.paste = FACE_PASTE if runner.conditioned else LOWER_FACE_PASTE
        if not runner.conditioned:
            log.info("this model has no emotion input (a plain Wav2Lip or per-pair model): "
                     "--emotion and --intensity do not change it")

    def process(self, frame: np.ndarray, face: Face | None, audio: np.ndarray | None, controls: Controls
                ) -> np.ndarray:
        if face is None or audio is None:
            return frame
        state = self.ramp.step(control_vector(controls), face.timestamp_ms, controls.ramp_s)
        shown = face.presence * state[VISIBLE]
        if shown <= 1e-3:
            return frame
        m = wav2lip_transform(face, WAV2LIP_CROP_SIZE)
        crop = warp_crop(frame, m, WAV2LIP_CROP_SIZE)
        inputs = model_inputs(crop, audio)
        if self.runner.conditioned:
            inputs |= emotion_inputs(state[:VISIBLE])
        generated = to_crop(self.runner.run(inputs)[0])
        mask = face_mask(transform_points(m, face.landmarks), WAV2LIP_CROP_SIZE, self.paste) * _EDGE
        return paste_back(frame, generated, m, mask, presence=shown, source=crop, config=self.paste)

    def close(self) -> None:
        self.runner.close()
