"""Make the README's emotion grid: rows are emotions, columns intensities, all on one frame of a real clip.

    .venv/bin/python tools/emotion_grid.py [--source ../shared/media/talk_d.mp4] [--frame 20] [--out docs/...]

Each cell runs the warp engine on the same frame for long enough that its 200 ms ramp has settled.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import av
import cv2
import numpy as np

from livemood.config import EMOTIONS, Controls
from livemood.engines.warp import WarpEngine
from livemood.face.tracker import Face, FaceTracker

INTENSITIES = (0.0, 0.3, 0.6, 1.0)
CELL_PX = 200
SETTLE_FRAMES = 8  # 320 ms at 25 fps: past the ramp
LABEL_PX = 110


def frames_until(path: Path, index: int) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        out = []
        for frame in c.decode(c.streams.video[0]):
            out.append(frame.to_ndarray(format="bgr24"))
            if len(out) > index:
                return out
    raise SystemExit(f"{path} has only {len(out)} frames")


def cell(frame: np.ndarray, face: Face, emotion: str, intensity: float) -> np.ndarray:
    engine = WarpEngine()
    for i in range(SETTLE_FRAMES):
        stamped = replace(face, presence=1.0, timestamp_ms=face.timestamp_ms + 40 * i)
        out = engine.process(frame, stamped, None, Controls(emotion, intensity))
    x0, y0, x1, y1 = face.box
    side = 1.25 * max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    m = np.array([[CELL_PX / side, 0, CELL_PX / 2 - cx * CELL_PX / side],
                  [0, CELL_PX / side, CELL_PX / 2 - cy * CELL_PX / side]])
    return cv2.warpAffine(out, m, (CELL_PX, CELL_PX), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)


def label(text: str, width: int, height: int) -> np.ndarray:
    img = np.full((height, width, 3), 255, np.uint8)
    cv2.putText(img, text, (8, height // 2 + 6), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (30, 30, 30), 1, cv2.LINE_AA)
    return img


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", type=Path, default=Path(__file__).resolve().parents[2] / "shared/media/talk_d.mp4")
    p.add_argument("--frame", type=int, default=20)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs/emotion_grid.jpg")
    args = p.parse_args()
    frames = frames_until(args.source, args.frame)
    with FaceTracker() as tracker:
        faces = [tracker.track(f, 40 * i) for i, f in enumerate(frames)]
    frame, face = frames[-1], faces[-1]
    if face is None:
        raise SystemExit(f"no face in frame {args.frame} of {args.source}")
    header = np.hstack([label("", LABEL_PX, 30)] + [label(f"intensity {i:g}", CELL_PX, 30) for i in INTENSITIES])
    rows = [header]
    for emotion in EMOTIONS:
        cells = [cell(frame, face, emotion, i) for i in INTENSITIES]
        rows.append(np.hstack([label(emotion, LABEL_PX, CELL_PX), *cells]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), np.vstack(rows), [cv2.IMWRITE_JPEG_QUALITY, 88])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
