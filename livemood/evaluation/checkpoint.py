"""`livemood evaluate --weights`: a generator checkpoint judged on a clip.

The clip is rendered through the neural engine (the same path as `livemood --engine neural`), then measured by
`evaluate` (expression shift, valence proxy, lip opening, background) and here by:

* lip sync with SyncNet_color (when its weights are given): LSE-D / LSE-C style distance and confidence of the
  96x96 mouth crops against the clip's audio, for the input (the reference) and the output;
* visual quality without a reference network: the output face's sharpness relative to the input's (variance of
  the Laplacian over the aligned 256x256 face crop; 1 = as sharp, a blurry generator scores well below 1), and the
  PSNR of the output face crop against the input's (how much of the face the generator redrew).

All crops are taken where the face is tracked in the input, so both videos are measured at the same place.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from livemood.audio.files import read_audio
from livemood.audio.mel import mel_window, melspectrogram
from livemood.config import Controls, OutputConfig, RunConfig, SourceConfig, UsageError
from livemood.evaluation.metrics import psnr, sharpness
from livemood.face.align import WARP_CROP_SIZE, WAV2LIP_CROP_SIZE, crop_transform, warp_crop, wav2lip_transform
from livemood.face.tracker import FaceTracker
from livemood.video import VideoReader

if TYPE_CHECKING:
    from livemood.models.syncnet import SyncNet


@dataclass(frozen=True)
class CheckpointScores:
    sync_distance_source: float | None  # None without SyncNet weights
    sync_confidence_source: float | None
    sync_distance_output: float | None
    sync_confidence_output: float | None
    sharpness_ratio: float  # output face / input face, Laplacian variance
    face_psnr_db: float  # output face crop vs input face crop

    def to_dict(self) -> dict[str, float | None]:
        return {k: None if v is None else round(v, 6) for k, v in asdict(self).items()}

    def summary(self) -> str:
        if self.sync_distance_output is None:
            sync = "lip sync (SyncNet): not measured, give --syncnet"
        else:
            sync = (f"lip sync (SyncNet distance / confidence): input {self.sync_distance_source:.3f} / "
                    f"{self.sync_confidence_source:.3f}, output {self.sync_distance_output:.3f} / "
                    f"{self.sync_confidence_output:.3f}")
        return (f"{sync}\nface sharpness (output / input): {self.sharpness_ratio:.3f}; face PSNR output vs input: "
                f"{self.face_psnr_db:.2f} dB")


def open_syncnet(path: Path) -> SyncNet:
    """The `--syncnet` weights, loaded and checked (before anything is rendered); UsageError if refused."""
    from livemood.models.checkpoint import CheckpointError
    from livemood.models.syncnet import load_syncnet

    try:
        return load_syncnet(path)
    except CheckpointError as e:
        raise UsageError(f"--syncnet: {e}") from e


def render(weights: Path, source: Path, output: Path, emotion: str, intensity: float, backend: str) -> None:
    """Write `output`: `source` through the neural engine with these weights and controls."""
    from livemood.live.pipeline import assemble
    from livemood.live.stats import StageTimes

    config = RunConfig(source=SourceConfig.parse(str(source)), output=OutputConfig(output), engine="neural",
                       weights=weights, backend=backend, controls=Controls(emotion, intensity))
    assemble(config, StageTimes()).run()


def score_checkpoint_output(source: Path, output: Path, syncnet: SyncNet | None) -> CheckpointScores:
    """SyncNet scores and visual-quality measures of `output` (rendered from `source`); see the module docstring.

    Both videos are decoded in lockstep, a frame at a time; only the small crops are kept.
    """
    mouths: dict[str, list[np.ndarray]] = {"source": [], "output": []}
    sharp, sse, count, windows = [0.0, 0.0], 0.0, 0, []
    mel = melspectrogram(read_audio(source)[0])
    src = VideoReader(source, "source")
    out = VideoReader(output, "output")
    try:
        with FaceTracker() as tracker:
            while (a_frame := src.read()) is not None and (b_frame := out.read()) is not None:
                (frame_src, time_s), (frame_out, _) = a_frame, b_frame
                face = tracker.track(frame_src, round(time_s * 1e3))
                if face is None:
                    continue
                m96, m256 = wav2lip_transform(face, WAV2LIP_CROP_SIZE), crop_transform(face, WARP_CROP_SIZE)
                for k, (name, frame) in enumerate((("source", frame_src), ("output", frame_out))):
                    mouths[name].append(warp_crop(frame, m96, WAV2LIP_CROP_SIZE))
                    grey = cv2.cvtColor(warp_crop(frame, m256, WARP_CROP_SIZE), cv2.COLOR_BGR2GRAY)
                    sharp[k] += sharpness(grey)
                a, b = mouths["source"][-1].astype(np.float64), mouths["output"][-1].astype(np.float64)
                sse, count = sse + float(((a - b) ** 2).sum()), count + a.size
                windows.append(mel_window(mel, src.count - 1, src.fps))
    finally:
        src.close()
        out.close()
    if count == 0:
        raise ValueError(f"no face found in {source}")
    scores: list[float | None] = [None] * 4
    if syncnet is not None:
        from livemood.models.syncnet import sync_scores

        stacked = np.stack(windows).astype(np.float32)
        scores = [*sync_scores(syncnet, np.stack(mouths["source"]), stacked),
                  *sync_scores(syncnet, np.stack(mouths["output"]), stacked)]
    return CheckpointScores(*scores, sharpness_ratio=sharp[1] / max(sharp[0], 1e-9), face_psnr_db=psnr(sse, count))
