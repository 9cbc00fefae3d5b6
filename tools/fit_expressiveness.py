"""Fit the expressiveness's read-back per region: of a move the warp engine makes, how much the face mesh sees on
the output. The engine divides its moves by it (`expressiveness.TRANSFER`).

    .venv/bin/python tools/fit_expressiveness.py [--clips ../shared/media/talk_c.mp4 ../shared/media/talk_e.mp4]

Each clip is tracked, its neutral face settled as a file run does, rendered in memory at expressiveness 0.5 and
1.5 with the shipped TRANSFER, and the output tracked again. Per region (brows, lids, the lip corners) the RMS
motion around the clip's median shape, output / input, with the head's pose taken out as the engine takes it out
(each face moved onto the first one's skull in 3D; `livemood evaluate`'s 2D measure also counts nods), should be
X; the read-back at this working point is TRANSFER x (ratio - 1) / (X - 1). Printed per clip and level, and
averaged over both: paste the result into TRANSFER and run again until it stands still (the read-back depends on
how far a move goes). One value serves calming and livening: a calmed face that moved further than asked would
overshoot the neutral face. The lids' figure is mostly blinks, which moving pixels can neither undo nor deepen:
it is not for TRANSFER (see there). Fit on some clips and check on others with `livemood evaluate`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from livemood.config import Controls
from livemood.engines.expressiveness import TRANSFER
from livemood.engines.warp import WarpEngine
from livemood.evaluation.metrics import expression_motion, expression_ratio
from livemood.face.align import skull_units
from livemood.face.regions import BROWS, LIDS, LIP_CORNERS
from livemood.face.tracker import Face, FaceTracker
from livemood.video import VideoReader

MEDIA = Path(__file__).resolve().parents[2] / "shared/media"
REGIONS = {"brows": BROWS, "lids": LIDS, "mouth": LIP_CORNERS}  # TRANSFER's regions; the mouth read at its corners
LEVELS = {"calm": 0.5, "lively": 1.5}


def _faces(frames: list[tuple[np.ndarray, float]]) -> list[Face | None]:
    """The tracked face in each (BGR frame, seconds)."""
    with FaceTracker() as tracker:
        return [tracker.track(frame, round(t * 1e3)) for frame, t in frames]


def read_back(clip: Path) -> dict[str, dict[str, float]]:
    """Level name -> region -> the read-back measured on this clip."""
    with VideoReader(clip, "clip") as reader:
        frames = list(iter(reader.read, None))
    faces = _faces(frames)
    result: dict[str, dict[str, float]] = {}
    for key, level in LEVELS.items():
        engine = WarpEngine()
        engine.neutral.look_ahead(frames)
        controls = Controls(expressiveness=level, ramp_s=0.0)
        outputs = [(engine.process(frame, face, None, controls), t)
                   for (frame, t), face in zip(frames, faces, strict=True)]
        pairs = [(a, b) for a, b in zip(faces, _faces(outputs), strict=True) if a is not None and b is not None]
        reference = pairs[0][0].points
        shapes_in, shapes_out = (skull_units(np.array([pair[k].points for pair in pairs]), reference) for k in (0, 1))
        result[key] = {}
        for region, points in REGIONS.items():
            ratio = expression_ratio(expression_motion(shapes_in, points), expression_motion(shapes_out, points))
            result[key][region] = TRANSFER[region] * (ratio - 1.0) / (level - 1.0)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=Path, nargs="+", default=[MEDIA / "talk_c.mp4", MEDIA / "talk_e.mp4"])
    args = p.parse_args()
    columns = [(key, region) for key in LEVELS for region in REGIONS]
    print("| clip | " + " | ".join(f"{region}, {key}" for key, region in columns) + " |")
    print("|---|" + "---|" * len(columns))
    measured = [read_back(clip) for clip in args.clips]
    for clip, m in zip(args.clips, measured, strict=True):
        print(f"| {clip.name} | " + " | ".join(f"{m[key][region]:.3f}" for key, region in columns) + " |")
    fitted = {region: round(float(np.mean([m[key][region] for m in measured for key in LEVELS])), 2)
              for region in REGIONS}
    print(f"TRANSFER = {fitted}")


if __name__ == "__main__":
    main()
