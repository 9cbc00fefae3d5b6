"""Check the warp engine against issue 5's emotion bar on a folder of clips, with every expression classifier.

    .venv/bin/python tools/emotion_bar.py [--clips ../shared/media] [--intensity 0.6] [--emotions happy,sad,...]

Each clip is rendered once per emotion with the `livemood` command (the user's path: tracking, warp, encoding),
then scored by `evaluate_videos` with each classifier in `config.CLASSIFIERS`. Prints one row per clip, emotion and
classifier, then the mean target shift per emotion and classifier, the worst lip correlation and whether every
frame was kept. Renders go to a temporary folder (or --keep DIR).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from livemood.config import CLASSIFIERS, EXIT_OK, EXIT_SOURCE_DAMAGED
from livemood.evaluation.videos import evaluate_videos
from livemood.models.expression import ExpressionClassifier

BAR = {"happy": 0.25, "sad": 0.10, "surprised": 0.10, "angry": 0.10}  # mean target shift at intensity 0.6


def render(source: Path, output: Path, emotion: str, intensity: float) -> None:
    cmd = [sys.executable, "-m", "livemood", "--source", str(source), "--engine", "warp", "--emotion", emotion,
           "--intensity", str(intensity), "--output", str(output)]
    done = subprocess.run(cmd, capture_output=True)
    if done.returncode not in (EXIT_OK, EXIT_SOURCE_DAMAGED):  # a cut source is rendered as far as it goes
        raise subprocess.CalledProcessError(done.returncode, cmd, done.stdout, done.stderr)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=Path, default=Path("../shared/media"), help="folder of .mp4 clips")
    p.add_argument("--intensity", type=float, default=0.6)
    p.add_argument("--emotions", default=",".join(BAR))
    p.add_argument("--keep", type=Path, help="keep the renders in this folder")
    args = p.parse_args()
    clips = sorted(args.clips.glob("*.mp4"))
    if not clips:
        raise SystemExit(f"no .mp4 clips in {args.clips}")
    emotions = args.emotions.split(",")
    classifiers = [ExpressionClassifier(name=name) for name in CLASSIFIERS]
    shifts: dict[tuple[str, str], list[float]] = defaultdict(list)
    lips: list[float] = []
    all_kept = True
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        print("| clip | emotion | classifier | target shift | largest class change | lip r | frames in/out |")
        print("|---|---|---|---|---|---|---|")
        for clip in clips:
            for emotion in emotions:
                out = folder / f"{clip.stem}_{emotion}.mp4"
                render(clip, out, emotion, args.intensity)
                for clf in classifiers:  # each call re-tracks both videos: the lip and frame numbers repeat
                    r = evaluate_videos(clip, out, emotion, None, progress=False, classifier=clf)
                    change = float(np.abs(np.subtract(r.mean_probs_output, r.mean_probs_source)).max())
                    shifts[(emotion, clf.name)].append(r.target_shift)
                    lip = r.lip_correlation if r.lip_correlation is not None else float("nan")
                    lips.append(lip)
                    all_kept &= r.frame_counts_match
                    print(f"| {clip.stem} | {emotion} | {clf.name} | {r.target_shift:+.3f} | {change:.3f} | "
                          f"{lip:.3f} | {r.source_frames}/{r.output_frames} |", flush=True)
    print(f"\nmean target shift at intensity {args.intensity} over {len(clips)} clips:")
    for emotion in emotions:
        bar = f" (bar {BAR[emotion]:.2f} at 0.6)" if emotion in BAR else ""
        means = ", ".join(f"{name} {np.mean(shifts[(emotion, name)]):+.3f}" for name in CLASSIFIERS)
        print(f"  {emotion}: {means}{bar}")
    print(f"worst lip r {np.nanmin(lips):.3f}; every frame kept: {all_kept}")


if __name__ == "__main__":
    main()
