"""Benchmark: face tracking + 256-px aligned crop + identity paste-back per frame, on a 1280x720 canvas.

Frames are decoded and placed on the canvas before timing (a shared clip resized to the canvas height and
centred, like a webcam frame with a person in it). Each timed step is what the pipeline does per frame:
`FaceTracker.track`, `crop_transform` + `warp_crop` (256 x 256), the face mask, and `paste_back` of the
unchanged crop (detail-preserving mode, in place). Decoding is not included. The clip is played forwards then
backwards so tracking never jumps. Prints one JSON line with median and p95 milliseconds.

    .venv/bin/python tools/bench_face.py [--source ../shared/media/talk_a.mp4] [--frames 400]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import av
import cv2
import numpy as np

from livemood.face.align import WARP_CROP_SIZE, crop_transform, transform_points, warp_crop
from livemood.face.blend import face_mask, paste_back
from livemood.face.tracker import FaceTracker

DEFAULT_SOURCE = Path(__file__).resolve().parents[1].parent / "shared" / "media" / "talk_a.mp4"


def canvases(source: Path, width: int, height: int, limit: int) -> tuple[list[np.ndarray], float]:
    """Decoded frames of `source` resized to the canvas height and centred on a (height, width) canvas."""
    out = []
    with av.open(str(source)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or 25)
        for frame in container.decode(stream):
            img = frame.to_ndarray(format="bgr24")
            scale = min(height / img.shape[0], width / img.shape[1])
            img = cv2.resize(img, (round(img.shape[1] * scale), round(img.shape[0] * scale)),
                             interpolation=cv2.INTER_AREA)
            canvas = np.zeros((height, width, 3), np.uint8)
            y0, x0 = (height - img.shape[0]) // 2, (width - img.shape[1]) // 2
            canvas[y0:y0 + img.shape[0], x0:x0 + img.shape[1]] = img
            out.append(canvas)
            if len(out) >= limit:
                break
    return out, fps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--frames", type=int, default=400, help="timed frames")
    parser.add_argument("--warmup", type=int, default=30, help="untimed frames first")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    clip, fps = canvases(args.source, args.width, args.height, 10_000)
    order = list(range(len(clip))) + list(range(len(clip) - 2, 0, -1))  # forwards, then backwards
    stages: dict[str, list[float]] = {"track": [], "align": [], "paste": [], "total": []}
    found = 0
    with FaceTracker() as tracker:
        for i in range(args.warmup + args.frames):
            frame = clip[order[i % len(order)]].copy()  # fresh pixels: paste_back writes in place
            ts_ms = round(i * 1000.0 / fps)
            t0 = time.perf_counter()
            face = tracker.track(frame, ts_ms)
            t1 = time.perf_counter()
            t2 = t1
            if face is not None:
                m = crop_transform(face, WARP_CROP_SIZE)
                crop = warp_crop(frame, m, WARP_CROP_SIZE)
                mask = face_mask(transform_points(m, face.landmarks), WARP_CROP_SIZE)
                t2 = time.perf_counter()
                paste_back(frame, crop, m, mask, presence=face.presence, source=crop, out=frame)
            t3 = time.perf_counter()
            if i >= args.warmup:
                found += face is not None
                for key, value in (("track", t1 - t0), ("align", t2 - t1), ("paste", t3 - t2), ("total", t3 - t0)):
                    stages[key].append(1000.0 * value)
    total = np.array(stages["total"])
    print(json.dumps({
        "bench": "track+align256+paste(identity) per frame",
        "source": args.source.name, "canvas": [args.width, args.height], "frames": args.frames,
        "warmup": args.warmup, "face_found": found,
        "p50_ms": round(float(np.median(total)), 3), "p95_ms": round(float(np.percentile(total, 95)), 3),
        "stages_p50_ms": {k: round(float(np.median(v)), 3) for k, v in stages.items() if k != "total"},
        "cv2_threads": cv2.getNumThreads(),
    }))


if __name__ == "__main__":
    main()
