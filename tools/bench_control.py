"""Benchmark: what the control panel's MJPEG preview costs the frame loop, with one viewer connected and with none.

A stand-in frame loop runs at the pipeline's rate (30 fps) on 1280x720 frames of a shared clip: each frame it does
the pipeline's face tracking (`FaceTracker.track`, mediapipe; `--work blur` uses a fixed OpenCV workload instead)
and then `ControlServer.publish`. Timed per frame: `publish` alone, and work + publish (the "pipeline step"); the
server thread's encode time (scale to 640 px + JPEG) is read from the server. The viewer is a separate process
reading /api/preview.mjpg over loopback, as a browser would, so its CPU use competes with the loop as a browser's
does. Conditions alternate over `--rounds`, so drift on a shared machine hits both alike. Decoding the clip is not
included. Prints a table and one JSON line (milliseconds; publish in microseconds).

    .venv/bin/python tools/bench_control.py [--source ../shared/media/talk_a.mp4] [--frames 300] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from bench_face import canvases  # a sibling tool: scripts in tools/ run with tools/ on sys.path

from livemood.config import Controls
from livemood.controls import ControlState
from livemood.live.control import ControlServer

DEFAULT_SOURCE = Path(__file__).resolve().parents[1].parent / "shared" / "media" / "talk_a.mp4"
FPS = 30.0  # the pipeline's rate
SIZE = (1280, 720)  # (width, height) of the frames
# The viewer: reads the MJPEG as fast as it comes and throws it away; prints "ready" after its first frame.
VIEWER = """
import http.client, sys
conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=30)
conn.request("GET", "/api/preview.mjpg", headers={"Authorization": "Bearer " + sys.argv[2]})
response = conn.getresponse()
assert response.status == 200, response.status
first = True
while chunk := response.read1(65536):
    if first:
        print("ready", flush=True)
        first = False
"""


def blur_work(frame: np.ndarray, _: int) -> None:
    cv2.GaussianBlur(cv2.cvtColor(frame, cv2.COLOR_BGR2YUV), (0, 0), 3)


def run_loop(server: ControlServer, frames: list[np.ndarray], work, count: int, start: int) -> dict[str, list[float]]:
    """`count` paced frames of work + publish; durations in seconds."""
    publish_s, step_s = [], []
    period = 1.0 / FPS
    due = time.perf_counter()
    for i in range(start, start + count):
        frame = frames[i % len(frames)].copy()  # a fresh array per frame, as the pipeline's output is
        t0 = time.perf_counter()
        work(frame, round(i * 1000 / FPS))
        t1 = time.perf_counter()
        server.publish(frame)
        t2 = time.perf_counter()
        publish_s.append(t2 - t1)
        step_s.append(t2 - t0)
        due += period
        time.sleep(max(0.0, due - time.perf_counter()))
    return {"publish": publish_s, "step": step_s}


def summary(values_s: list[float], scale: float) -> dict[str, float]:
    return {"p50": round(float(np.percentile(values_s, 50)) * scale, 3),
            "p95": round(float(np.percentile(values_s, 95)) * scale, 3)} if values_s else {"p50": 0.0, "p95": 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--frames", type=int, default=300, help="timed frames per condition and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=30, help="untimed frames before each timed run")
    parser.add_argument("--work", choices=("face", "blur"), default="face")
    parser.add_argument("--cv-threads", type=int, default=None, help="cv2.setNumThreads first (default: leave it)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.cv_threads is not None:
        cv2.setNumThreads(args.cv_threads)

    frames, _ = canvases(args.source, *SIZE, limit=300)  # webcam-like frames: the clip centred on SIZE
    tracker = None
    if args.work == "face":
        from livemood.face import FaceTracker

        tracker = FaceTracker()
        work = tracker.track
    else:
        work = blur_work
    results: dict[str, dict[str, list[float]]] = {
        name: {"publish": [], "step": [], "encode": []} for name in ("no viewer", "one viewer")}
    position = 0
    with ControlServer(ControlState(Controls()), port=0) as server:
        for _ in range(args.rounds):
            for name in results:
                viewer = None
                if name == "one viewer":
                    viewer = subprocess.Popen([sys.executable, "-c", VIEWER, str(server.port), server.token],
                                              stdout=subprocess.PIPE, text=True)
                    server.publish(frames[0].copy())
                    assert viewer.stdout.readline().strip() == "ready"
                run_loop(server, frames, work, args.warmup, position)
                position += args.warmup
                server.preview.take_encode_times_s()  # the warm-up's
                timed = run_loop(server, frames, work, args.frames, position)
                position += args.frames
                results[name]["publish"] += timed["publish"]
                results[name]["step"] += timed["step"]
                results[name]["encode"] += server.preview.take_encode_times_s()
                if viewer is not None:
                    viewer.terminate()
                    viewer.wait()
    if tracker is not None:
        tracker.close()

    report = {"work": args.work, "fps": FPS, "size": list(SIZE), "frames": args.frames * args.rounds,
              "cv2_threads": cv2.getNumThreads(), "cpus": os.cpu_count()}
    print(f"{'':12} {'publish p50/p95 µs':>20} {'step p50/p95 ms':>18} {'encode p50/p95 ms':>19} {'encodes':>8}")
    for name, values in results.items():
        publish, step, encode = (summary(values["publish"], 1e6), summary(values["step"], 1e3),
                                 summary(values["encode"], 1e3))
        report[name] = {"publish_us": publish, "step_ms": step, "encode_ms": encode, "encodes": len(values["encode"])}
        print(f"{name:12} {publish['p50']:>9.2f} / {publish['p95']:<8.2f} {step['p50']:>8.2f} / {step['p95']:<7.2f}"
              f" {encode['p50']:>8.2f} / {encode['p95']:<8.2f} {len(values['encode']):>8}")
    rise = report["one viewer"]["step_ms"]["p50"] - report["no viewer"]["step_ms"]["p50"]
    report["step_p50_rise_ms"] = round(rise, 3)
    print(f"pipeline step p50 rise with one viewer: {rise:+.2f} ms (bar: <= 1 ms)")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
