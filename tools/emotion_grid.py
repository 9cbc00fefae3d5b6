"""Make the README's emotion figures, on one frame of a real clip each.

    .venv/bin/python tools/emotion_grid.py [--source ../shared/media/talk_a.mp4] [--frame 40] [--out docs/...]
    .venv/bin/python tools/emotion_grid.py --actor [--mead ../shared/media/mead] [--out docs/beside_actor.jpg]

The grid: rows are emotions, columns intensities. `--actor`: rows are emotions, the real actor's take beside ours
made from his neutral take of the same sentence at intensity 1 (same frame index). Each of our cells runs the warp
engine on its frame long enough that the ramp has settled.
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


def cell(frame: np.ndarray, face: Face, emotion: str | None, intensity: float = 0.0) -> np.ndarray:
    """The face of `frame` (through the engine unless `emotion` is None), cut square and scaled to CELL_PX."""
    out = frame
    if emotion is not None:
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


def tracked_frame(path: Path, index: int) -> tuple[np.ndarray, Face]:
    frames = frames_until(path, index)
    with FaceTracker() as tracker:
        faces = [tracker.track(f, 40 * i) for i, f in enumerate(frames)]
    if faces[-1] is None:
        raise SystemExit(f"no face in frame {index} of {path}")
    return frames[-1], faces[-1]


def beside_actor(mead: Path, index: int) -> np.ndarray:
    """Rows: each emotion of M030, his real take | ours from his neutral take, intensity 1."""
    names = {"happy": "happy", "sad": "sad", "angry": "angry", "surprised": "surprised", "fearful": "fear",
             "disgusted": "disgusted", "contempt": "contempt"}
    frame, face = tracked_frame(mead / "M030_front_neutral_level1_001.mp4", index)
    rows = [np.hstack([label("", LABEL_PX, 30), label("real actor", CELL_PX, 30), label("ours, from neutral", CELL_PX,
                                                                                          30)])]
    for emotion, name in names.items():
        real, real_face = tracked_frame(mead / f"M030_front_{name}_level3_001.mp4", index)
        rows.append(np.hstack([label(emotion, LABEL_PX, CELL_PX), cell(real, real_face, None),
                               cell(frame, face, emotion, 1.0)]))
    return np.vstack(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    media = Path(__file__).resolve().parents[2] / "shared/media"
    docs = Path(__file__).resolve().parents[1] / "docs"
    p.add_argument("--source", type=Path, default=media / "talk_a.mp4")
    p.add_argument("--frame", type=int, default=40)
    p.add_argument("--actor", action="store_true", help="the real actor beside ours instead of the grid")
    p.add_argument("--mead", type=Path, default=media / "mead")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    out = args.out or docs / ("beside_actor.jpg" if args.actor else "emotion_grid.jpg")
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.actor:
        cv2.imwrite(str(out), beside_actor(args.mead, args.frame), [cv2.IMWRITE_JPEG_QUALITY, 88])
        print(f"wrote {out}")
        return
    frame, face = tracked_frame(args.source, args.frame)
    header = np.hstack([label("", LABEL_PX, 30)] + [label(f"intensity {i:g}", CELL_PX, 30) for i in INTENSITIES])
    rows = [header]
    for emotion in EMOTIONS:
        cells = [cell(frame, face, emotion, i) for i in INTENSITIES]
        rows.append(np.hstack([label(emotion, LABEL_PX, CELL_PX), *cells]))
    cv2.imwrite(str(out), np.vstack(rows), [cv2.IMWRITE_JPEG_QUALITY, 88])
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
