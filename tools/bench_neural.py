"""Benchmark: generator inference per frame (batch 1) for every backend this machine can run, full and slim width.

Each case builds a random-weight generator of that size (timing does not depend on the weights), exports it to
ONNX where the backend needs it, warms up, then times `runner.run` on fixed random inputs: the time includes the
host-to-device copy and the copy back (the device is synchronised by the copy), not the crop or the paste.
Prints one JSON line per case with median and p95 milliseconds.

    .venv/bin/python tools/bench_neural.py [--iterations 100] [--backends onnxruntime-cpu,torch-cpu]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from livemood.backends import open_runner, unavailable
from livemood.backends.cache import ArtefactCache
from livemood.backends.export import example_inputs
from livemood.models.blocks import parameter_count
from livemood.models.checkpoint import save_checkpoint
from livemood.models.wav2lip import SLIM_WIDTH, EmotionWav2Lip, Wav2Lip

WARMUP = 10
ALL_BACKENDS = ("tensorrt", "onnxruntime", "torch", "onnxruntime-cpu", "torch-cpu")


def bench(weights: Path, backend: str, cache: ArtefactCache, iterations: int) -> dict[str, object]:
    runner = open_runner(weights, backend, cache)
    model = EmotionWav2Lip(SLIM_WIDTH) if runner.conditioned else Wav2Lip(SLIM_WIDTH)  # only for the input names
    inputs = example_inputs(model, batch=1)
    for _ in range(WARMUP):
        runner.run(inputs)
    times = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        runner.run(inputs)
        times.append(time.perf_counter() - t0)
    runner.close()
    ms = np.array(times) * 1e3
    return {"backend": runner.name, "p50_ms": round(float(np.median(ms)), 2),
            "p95_ms": round(float(np.percentile(ms, 95)), 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=100)
    p.add_argument("--backends", default=",".join(ALL_BACKENDS), help="comma-separated; unavailable ones are skipped")
    p.add_argument("--conditioned", action="store_true", help="the emotion-conditioned generator (FiLM)")
    args = p.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        cache = ArtefactCache(Path(tmp) / "artefacts")
        backends = [b for b in args.backends.split(",") if unavailable(b) is None]
        cases = [(w, b) for w in (1.0, SLIM_WIDTH) for b in backends]
        for width, backend in tqdm(cases, desc="cases", leave=False):
            model = (EmotionWav2Lip if args.conditioned else Wav2Lip)(width)
            weights = Path(tmp) / f"w{width}.pth"
            if not weights.exists():
                save_checkpoint(weights, model)
            result = bench(weights, backend, cache, args.iterations)
            print(json.dumps({"width": width, "params_m": round(parameter_count(model) / 1e6, 1),
                              "conditioned": args.conditioned, **result}), flush=True)


if __name__ == "__main__":
    main()
