"""Measure the expressiveness's transfer per region: of the move the warp engine asks for, how much the face mesh
reads back on the output. The engine divides its moves by it (`expressiveness.TRANSFER`).

    .venv/bin/python tools/fit_expressiveness.py [--clips ../shared/media/talk_c.mp4 ../shared/media/talk_e.mp4]

Each clip is tracked, rendered in memory at each expressiveness level with every transfer set to 1 (the move asked
for is then (X - 1) x (current - neutral), with the neutral a file run sees), and the output tracked again.
Per region (brows, lids, the lip corners) the RMS motion around the clip's median shape (`livemood evaluate`'s
measure) gives three ratios to the input's: intended, read back. The transfer is (read back - 1) / (intended - 1),
averaged over the levels and clips. Fit on some clips and check the result on others with `livemood evaluate`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from livemood.config import Controls
from livemood.engines.expressiveness import TRANSFER, NeutralFace
from livemood.engines.warp import WarpEngine
from livemood.evaluation.metrics import expression_motion
from livemood.face.align import to_face_units
from livemood.face.regions import BROWS, LIDS, LIP_CORNERS
from livemood.face.tracker import FaceTracker
from livemood.video import VideoReader

MEDIA = Path(__file__).resolve().parents[2] / "shared/media"
REGIONS = {"brows": BROWS, "lids": LIDS, "mouth": LIP_CORNERS}  # TRANSFER's keys; the mouth is read at its corners
LEVELS = (0.5, 1.5)


class _Recording(NeutralFace):
    """The engine's neutral face, keeping each frame's move."""

    def __init__(self) -> None:
        super().__init__(transfer={region: 1.0 for region in TRANSFER})
        self.moves: list[np.ndarray] = []

    def move(self, shape: np.ndarray, scale: float, t_ms: int) -> np.ndarray:
        self.moves.append(super().move(shape, scale, t_ms).copy())
        return self.moves[-1]


def _motion(shapes: np.ndarray, points: tuple[int, ...]) -> float:
    return float(np.sqrt(np.mean(expression_motion(shapes, points) ** 2)))


def transfer(clip: Path) -> dict[str, list[float]]:
    """Per region, the transfer at each of LEVELS."""
    reader = VideoReader(clip, "clip")
    frames = []
    while (item := reader.read()) is not None:
        frames.append((item[0], round(item[1] * 1e3)))
    reader.close()
    frame_times = [(frame, ms / 1e3) for frame, ms in frames]
    with FaceTracker() as tracker:
        faces = [tracker.track(frame, ms) for frame, ms in frames]
    has_face = [k for k, face in enumerate(faces) if face is not None]
    shapes_in = np.array([to_face_units(faces[k].landmarks) for k in has_face])
    result: dict[str, list[float]] = {region: [] for region in REGIONS}
    for level in LEVELS:
        engine = WarpEngine()
        engine.neutral = neutral = _Recording()
        neutral.look_ahead(frame_times)  # as a file run does
        controls = Controls(expressiveness=level, ramp_s=0.0)
        outputs = [engine.process(frame, face, None, controls) for (frame, _), face in zip(frames, faces, strict=True)]
        intended = shapes_in + np.array(neutral.moves)
        with FaceTracker() as tracker:
            read = [tracker.track(out, ms) for out, (_, ms) in zip(outputs, frames, strict=True)]
        both = [i for i, k in enumerate(has_face) if read[k] is not None]
        shapes_out = np.array([to_face_units(read[has_face[i]].landmarks) for i in both])
        for region, points in REGIONS.items():
            base = _motion(shapes_in[both], points)
            wanted = _motion(intended[both], points) / base - 1.0
            result[region].append((_motion(shapes_out, points) / base - 1.0) / wanted)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=Path, nargs="+", default=[MEDIA / "talk_c.mp4", MEDIA / "talk_e.mp4"])
    args = p.parse_args()
    print("| clip | " + " | ".join(f"{r} at {x:g}" for r in REGIONS for x in LEVELS) + " |")
    print("|---|" + "---|" * len(REGIONS) * len(LEVELS))
    every: dict[str, list[float]] = {region: [] for region in REGIONS}
    for clip in args.clips:
        measured = transfer(clip)
        print(f"| {clip.name} | " + " | ".join(f"{k:.3f}" for r in REGIONS for k in measured[r]) + " |")
        for region, values in measured.items():
            every[region] += values
    fitted = {region: round(float(np.mean(values)), 2) for region, values in every.items()}
    print(f"TRANSFER = {fitted}")


if __name__ == "__main__":
    main()
