"""Soak test: the live loop for N minutes, with a line a minute and a summary JSON at the end.

The loop is the one a video call runs: a camera read by OpenCV (`CameraSource`), the warp engine with face
tracking, the microphone through PortAudio and PulseAudio played back delayed (`--audio-out`), and a virtual
camera. This machine, like CI, has neither a camera nor a sound card nor a virtual-camera device, so:

* the camera is an MJPEG stream over HTTP served here at the clip's frame rate from a shared clip (what an MJPG
  webcam delivers, paced in real time: a frame the pipeline misses is a real drop);
* the microphone is a private PulseAudio server (`tests.pulse`) with speech looped into a null sink by paplay;
* the virtual camera is `CountingCamera`, a pyvirtualcam backend registered only because there is no
  v4l2loopback device (pyvirtualcam tries the real one first, which fails here).

Every minute: fps (fresh frames), frames dropped at the source, repeats, latency p50/p95 (capture to the virtual
camera), the longest gap between two frames sent, and the process's RSS. The bar: no crash, under 1 % dropped,
RSS growth under 10 MB/h (judged from minute 1 on, once caches are warm, and only for runs of 10 minutes or more:
a shorter run's slope is noise). Exit status 1 when the bar is missed.

    .venv/bin/python tools/soak.py --minutes 2 [--engine warp] [--json soak.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pyvirtualcam

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.pulse, the PulseAudio server the microphone tests use

from bench_face import canvases  # noqa: E402  (a sibling tool: tools/ is on sys.path for scripts)

from livemood.config import AudioConfig, OutputConfig, RunConfig, SourceConfig  # noqa: E402
from livemood.frames import now  # noqa: E402
from livemood.live.pipeline import assemble  # noqa: E402
from livemood.live.stats import StageTimes, percentile_ms  # noqa: E402
from livemood.logs import quiet_native_stderr  # noqa: E402
from tests.pulse import MIC_SINK, OUT_SINK, missing_tools, private_pulseaudio  # noqa: E402

MEDIA = ROOT.parent / "shared" / "media"
CAMERA_SIZE = (640, 480)  # a webcam's default mode
JPEG_QUALITY = 85
MAX_DROP_PCT = 1.0
MAX_RSS_GROWTH_MB_H = 10.0
RSS_JUDGED_FROM_MIN = 10.0  # minutes a run needs before its RSS slope is judged
WARMUP_S = 10.0  # s of running before the minutes are counted
BOUNDARY = b"livemoodframe"


def jpeg_frames(clip: Path) -> tuple[list[bytes], float]:
    """The clip's frames letterboxed to CAMERA_SIZE and JPEG-encoded (kept encoded: ~40 kB each), and its fps."""
    images, fps = canvases(clip, *CAMERA_SIZE, limit=sys.maxsize)
    return [cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1].tobytes() for img in images], fps


class MjpegCamera:
    """Serves `frames` forwards then backwards (no jump) as multipart/x-mixed-replace at `fps`, on a fixed schedule
    (frame i at t0 + i / fps), to each client that connects."""

    def __init__(self, frames: list[bytes], fps: float) -> None:
        loop = frames + frames[-2:0:-1]

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY.decode()}")
                self.end_headers()
                t0, i = time.monotonic(), 0
                try:
                    while True:
                        delay = t0 + i / fps - time.monotonic()
                        if delay > 0:
                            time.sleep(delay)
                        jpg = loop[i % len(loop)]
                        self.wfile.write(b"--" + BOUNDARY + b"\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                         + str(len(jpg)).encode() + b"\r\n\r\n" + jpg + b"\r\n")
                        i += 1
                except (BrokenPipeError, ConnectionResetError):
                    return

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/camera.mjpg"
        threading.Thread(target=self.server.serve_forever, name="mjpeg-camera", daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class CountingCamera:
    """A pyvirtualcam backend that counts what it is sent and the gaps between sends (no device on this machine:
    registered only for the soak). Keeps no frames, so it adds nothing to the RSS being measured."""

    sent = 0
    longest_gap_s = 0.0  # since the last `take_gap`
    _last: float | None = None

    def __init__(self, *, width: int, height: int, fps: float, fourcc: int, device: str | None, **kw: object):
        pass

    def send(self, frame: np.ndarray) -> None:
        t = now()
        if CountingCamera._last is not None:
            CountingCamera.longest_gap_s = max(CountingCamera.longest_gap_s, t - CountingCamera._last)
        CountingCamera._last = t
        CountingCamera.sent += 1

    @classmethod
    def take_gap(cls) -> float:
        gap, cls.longest_gap_s = cls.longest_gap_s, 0.0
        return gap

    def close(self) -> None:
        pass

    def device(self) -> str:
        return "soak-counter"

    def native_fourcc(self) -> int | None:
        return None  # BGR, as the pipeline produces it


class MinuteTimes(StageTimes):
    """StageTimes that also keeps every latency of the current minute and of the whole run."""

    def __init__(self) -> None:
        super().__init__()
        self.minute: list[float] = []
        self.all: list[float] = []

    def add_latency(self, seconds: float) -> None:
        super().add_latency(seconds)
        self.minute.append(seconds)
        self.all.append(seconds)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def speech_loop(stop: threading.Event) -> None:
    """paplay the shared speech into the microphone's null sink, again and again, until `stop`."""
    while not stop.is_set():
        player = subprocess.Popen(["paplay", f"--device={MIC_SINK}", str(MEDIA / "speech_en_16k.wav")])
        while player.poll() is None:
            if stop.wait(0.2):
                player.terminate()
        player.wait()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=2.0)
    p.add_argument("--engine", default="warp")
    p.add_argument("--clip", type=Path, default=MEDIA / "talk_a.mp4")
    p.add_argument("--json", type=Path, help="also write the summary here")
    args = p.parse_args()
    missing = missing_tools()
    if missing:
        sys.exit(f"soak: PulseAudio not found ({', '.join(missing)}): apt-get install pulseaudio pulseaudio-utils")
    quiet_native_stderr()
    # SIGTERM (a CI timeout, kill) unwinds like Ctrl-C, so the PulseAudio server and paplay are stopped too.
    signal.signal(signal.SIGTERM, _interrupt)
    faults: list[str] = []

    class Faults(logging.Handler):  # every warning and error the run logs, for the summary
        def emit(self, record: logging.LogRecord) -> None:
            faults.append(record.getMessage())

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("livemood").addHandler(Faults(logging.WARNING))
    frames, fps = jpeg_frames(args.clip)
    camera = MjpegCamera(frames, fps)
    pyvirtualcam.register_backend("soak-counter", CountingCamera)
    stop, speech_stop = threading.Event(), threading.Event()
    minutes: list[dict] = []
    crash: str | None = None
    with tempfile.TemporaryDirectory(prefix="soak-pulse-") as root, private_pulseaudio(Path(root)):
        os.environ.update(PULSE_SOURCE=f"{MIC_SINK}.monitor", PULSE_SINK=OUT_SINK)  # PULSE_SERVER: set for us
        player = threading.Thread(target=speech_loop, args=(speech_stop,), daemon=True)
        player.start()
        times = MinuteTimes()
        config = RunConfig(SourceConfig.parse(camera.url, fps=fps), OutputConfig(), engine=args.engine,
                           audio=AudioConfig(mic="pulse", audio_out="pulse"))
        pipeline = assemble(config, times, stop=stop)

        def run() -> None:
            nonlocal crash
            try:
                pipeline.run()
            except BaseException as e:  # the soak's one failure: anything that ends the live loop
                crash = f"{type(e).__name__}: {e}"
                stop.set()

        runner = threading.Thread(target=run, name="pipeline")
        runner.start()
        try:
            # Warm-up, not counted: the frames that queued in the stream while the engine loaded are dropped once
            # (as from a webcam's driver buffer), and the first frames pay for lazy initialisation.
            while not times.all and not stop.wait(0.1):
                pass
            stop.wait(WARMUP_S)
            t_start, dropped, sent = now(), pipeline.source.dropped, CountingCamera.sent
            warmup_dropped = dropped
            times.minute, times.all = [], []
            CountingCamera.take_gap()
            for minute in range(1, int(np.ceil(args.minutes)) + 1):
                end = t_start + min(minute, args.minutes) * 60
                while not stop.is_set() and now() < end:
                    time.sleep(0.2)
                if stop.is_set() and crash is not None:
                    break
                fresh = len(times.minute)
                latencies, times.minute = times.minute, []
                d, s = pipeline.source.dropped - dropped, CountingCamera.sent - sent
                dropped, sent = dropped + d, sent + s
                seconds = (min(minute, args.minutes) - (minute - 1)) * 60
                row = dict(minute=minute, fps=round(fresh / seconds, 2), fresh=fresh, dropped=d,
                           drop_pct=round(100 * d / max(fresh + d, 1), 3), repeated=s - fresh,
                           latency_p50_ms=round(percentile_ms(latencies, 50), 1),
                           latency_p95_ms=round(percentile_ms(latencies, 95), 1),
                           longest_gap_ms=round(1e3 * CountingCamera.take_gap(), 1), rss_mb=round(rss_mb(), 1))
                minutes.append(row)
                print(f"minute {minute}: {row['fps']:.1f} fps, dropped {d} ({row['drop_pct']:.2f} %), repeated "
                      f"{row['repeated']}, latency p50 {row['latency_p50_ms']:.0f} ms "
                      f"p95 {row['latency_p95_ms']:.0f} ms, longest gap {row['longest_gap_ms']:.0f} ms, "
                      f"RSS {row['rss_mb']:.1f} MB", flush=True)
        finally:  # also on Ctrl-C or SIGTERM: the pipeline, the speech and PulseAudio stop with the soak
            stop.set()
            runner.join()
            speech_stop.set()
            player.join()
    camera.close()
    summary = summarise(args, minutes, times.all, crash, warmup_dropped, faults)
    print(json.dumps(summary))
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if summary["bar"]["passed"] else 1


def summarise(args: argparse.Namespace, minutes: list[dict], latencies: list[float], crash: str | None,
              warmup_dropped: int, faults: list[str]) -> dict:
    fresh = sum(m["fresh"] for m in minutes)
    dropped = sum(m["dropped"] for m in minutes)
    drop_pct = 100 * dropped / max(fresh + dropped, 1)
    # RSS slope from minute 1 on (minute 1's figure is taken once caches, graphs and buffers are warm).
    rss = [(m["minute"], m["rss_mb"]) for m in minutes]
    growth = float(np.polyfit([t for t, _ in rss], [r for _, r in rss], 1)[0] * 60) if len(rss) >= 2 else 0.0
    judged = args.minutes >= RSS_JUDGED_FROM_MIN
    failures = []
    if crash is not None:
        failures.append(f"crashed: {crash}")
    if drop_pct >= MAX_DROP_PCT:
        failures.append(f"dropped {drop_pct:.2f} % >= {MAX_DROP_PCT} %")
    if judged and growth >= MAX_RSS_GROWTH_MB_H:
        failures.append(f"RSS grew {growth:.1f} MB/h >= {MAX_RSS_GROWTH_MB_H}")
    return dict(
        minutes=args.minutes, engine=args.engine, clip=args.clip.name,
        camera=f"{CAMERA_SIZE[0]}x{CAMERA_SIZE[1]} MJPEG", warmup_s=WARMUP_S, warmup_dropped=warmup_dropped,
        crashes=int(crash is not None), crash=crash, frames=fresh, dropped=dropped, drop_pct=round(drop_pct, 3),
        repeated=sum(m["repeated"] for m in minutes),
        fps=round(fresh / max(60 * args.minutes, 1e-9), 2),
        latency_p50_ms=round(percentile_ms(latencies, 50), 1), latency_p95_ms=round(percentile_ms(latencies, 95), 1),
        longest_gap_ms=max((m["longest_gap_ms"] for m in minutes), default=0.0),
        rss_first_mb=rss[0][1] if rss else None, rss_last_mb=rss[-1][1] if rss else None,
        rss_growth_mb_per_h=round(growth, 1), rss_judged=judged,
        warnings=faults[:20], warning_count=len(faults),
        bar=dict(passed=not failures, failures=failures),
    )


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: everything it started is already stopped
        sys.exit("soak: interrupted, no summary")
