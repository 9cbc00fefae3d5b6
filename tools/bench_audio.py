"""Benchmark the live audio path per video frame: push one frame's worth of audio, then get its mel window.

What is timed: MelBuffer.push() of 640 samples (1/25 s at 16 kHz: the audio that arrives per video frame at
25 fps) followed by MelBuffer.window() for that frame, on real speech, in one thread. The bar is 0.5 ms per
video frame. Timed separately: the microphone's resampling of one video frame of 44.1 kHz device audio
(StreamResampler.push of 1764 samples), which runs in Microphone.read(). Capture itself is not timed. Prints the
numbers and a last line of JSON.

    .venv/bin/python tools/bench_audio.py [--iterations N] [--warmup N]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import wave
from pathlib import Path

import numpy as np

from livemood.audio.files import StreamResampler, resample
from livemood.audio.mel import SAMPLE_RATE, Lookahead, MelBuffer

SPEECH = Path(__file__).resolve().parents[1].parent / "shared" / "media" / "speech_en_16k.wav"
FPS = 25.0
BLOCK = int(SAMPLE_RATE / FPS)  # 640 samples per video frame
BAR_MS = 0.5
DEVICE_RATE = 44100  # Hz, a typical sound card rate for the resampling measurement


def load_speech() -> np.ndarray:
    with wave.open(str(SPEECH)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return pcm.astype(np.float32) / 32768.0


def run(speech: np.ndarray, lookahead: Lookahead, warmup: int, iterations: int) -> np.ndarray:
    """Per-frame times in ms; the speech loops (the stamps keep advancing) when there are more frames than audio."""
    buffer = MelBuffer(lookahead)
    t0 = time.monotonic()
    frames = speech.size // BLOCK
    times = np.empty(iterations)
    for i in range(warmup + iterations):
        k = i % frames
        block = speech[k * BLOCK : (k + 1) * BLOCK]
        t_block = t0 + i * BLOCK / SAMPLE_RATE
        # The frame whose window this block completes: the block's end minus the look-ahead latency.
        t_frame = t_block + BLOCK / SAMPLE_RATE - lookahead.added_latency_ms / 1000.0 - 1.0 / FPS
        start = time.perf_counter()
        buffer.push(block, t_block)
        window = buffer.window(t_frame)
        elapsed = time.perf_counter() - start
        if i >= warmup:
            assert window is not None and window.shape == (80, 16)
            times[i - warmup] = elapsed * 1000.0
    return times


def run_resampler(speech: np.ndarray, warmup: int, iterations: int) -> np.ndarray:
    """Per-frame times in ms of resampling one video frame of 44.1 kHz audio to 16 kHz, streaming."""
    device = resample(speech, SAMPLE_RATE, DEVICE_RATE)
    block = int(DEVICE_RATE / FPS)
    frames = device.size // block
    stream = StreamResampler(DEVICE_RATE)
    times = np.empty(iterations)
    for i in range(warmup + iterations):
        k = i % frames
        start = time.perf_counter()
        stream.push(device[k * block : (k + 1) * block], i / FPS)
        elapsed = time.perf_counter() - start
        if i >= warmup:
            times[i - warmup] = elapsed * 1000.0
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()
    speech = load_speech()
    results = {}
    for lookahead in Lookahead:
        times = run(speech, lookahead, args.warmup, args.iterations)
        median, p95 = float(np.median(times)), float(np.percentile(times, 95))
        results[lookahead.value] = {"median_ms": round(median, 4), "p95_ms": round(p95, 4)}
        print(
            f"{lookahead.value:>13}: push {BLOCK} samples + window, median {median:.3f} ms, p95 {p95:.3f} ms "
            f"over {args.iterations} frames (bar {BAR_MS} ms)"
        )
    worst_p95 = max(r["p95_ms"] for r in results.values())
    times = run_resampler(speech, args.warmup, args.iterations)
    median, p95 = float(np.median(times)), float(np.percentile(times, 95))
    results["resample_44k1_frame"] = {"median_ms": round(median, 4), "p95_ms": round(p95, 4)}
    print(f"resample {int(DEVICE_RATE / FPS)} samples 44.1 kHz -> 16 kHz: median {median:.3f} ms, p95 {p95:.3f} ms")
    summary = {
        "bench": "audio_push_window",
        "block_samples": BLOCK,
        "iterations": args.iterations,
        "cpu": platform.processor() or platform.machine(),
        "results": results,
        "bar_ms": BAR_MS,
        "pass": worst_p95 <= BAR_MS,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
