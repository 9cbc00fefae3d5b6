"""Judge an engine against real actors: each MEAD neutral take rendered into every emotion, compared with the same
speaker's real take of the same sentence (`livemood evaluate --reference`).

    .venv/bin/python tools/mead_reach.py [--data ../shared/media/mead] [--intensities 0.3,0.6,1.0]
        [--emotions happy,sad,...] [--classifier mini-xception] [--engine warp] [--keep DIR] [--json out.json]

The folder may hold MEAD's own layout (`person/video/front/emotion/level_n/clip.mp4`) or clips named
`person_front_emotion_leveln_clip.mp4`; pairs are (person, sentence) with a neutral take and an emotion take.
Prints one row per pair and emotion (reach of the target class at each intensity, landmark direction cosine and
magnitude ratio at the highest), then the mean per emotion. Renders go to a temporary folder (or --keep DIR).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

import numpy as np

from livemood.config import DEFAULT_CLASSIFIER, Controls, OutputConfig, RunConfig, SourceConfig
from livemood.evaluation.reference import compare_with_reference
from livemood.evaluation.videos import evaluate_videos, load_classifier
from livemood.live.pipeline import assemble
from livemood.live.stats import StageTimes
from livemood.training.data import paired_takes, scan

EMOTIONS = ("happy", "sad", "surprised", "angry", "fearful", "disgusted")


def pairs(data: Path) -> list[tuple[str, Path, dict[str, Path]]]:
    """(name, neutral take, {emotion: take at the strongest level}) per person and sentence."""
    return [(f"{person}/{sentence}", takes["neutral"], {e: path for e, path in takes.items() if e != "neutral"})
            for (person, sentence), takes in paired_takes(scan(data)).items()]


def render(source: Path, output: Path, engine: str, emotion: str, intensity: float) -> None:
    config = RunConfig(SourceConfig.parse(str(source)), OutputConfig(output), engine=engine,
                       controls=Controls(emotion, intensity))
    assemble(config, StageTimes()).run()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("../shared/media/mead"))
    p.add_argument("--intensities", default="0.3,0.6,1.0")
    p.add_argument("--emotions", default=",".join(EMOTIONS))
    p.add_argument("--classifier", default=DEFAULT_CLASSIFIER)
    p.add_argument("--engine", default="warp")
    p.add_argument("--keep", type=Path, help="keep the renders in this folder")
    p.add_argument("--json", type=Path, help="also write every measurement here")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    intensities = [float(x) for x in args.intensities.split(",")]
    emotions = args.emotions.split(",")
    found = pairs(args.data)
    if not found:
        raise SystemExit(f"no neutral/emotion pairs in {args.data}")
    classifier = load_classifier(args.classifier)
    rows: list[dict[str, object]] = []
    print(f"classifier {classifier.name}, engine {args.engine}")
    print("| pair | emotion | " + " | ".join(f"reach @{i:g}" for i in intensities)
          + f" | cos @{intensities[-1]:g} | magnitude @{intensities[-1]:g} | lip r |")
    print("|---" * (len(intensities) + 5) + "|")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for name, neutral, takes in found:
            for emotion in (e for e in emotions if e in takes):
                reach, last = [], None
                for intensity in intensities:
                    out = folder / f"{name.replace('/', '_')}_{emotion}_{intensity:g}.mp4"
                    render(neutral, out, args.engine, emotion, intensity)
                    report = evaluate_videos(neutral, out, emotion, None, progress=False, classifier=classifier)
                    last = (report, compare_with_reference(report, takes[emotion], classifier))
                    reach.append(last[1].target_reach)
                assert last is not None
                report, ref = last
                rows.append({"pair": name, "emotion": emotion, "reach": dict(zip(map(str, intensities), reach,
                                                                               strict=True)),
                             "direction_cosine": ref.direction_cosine, "magnitude_ratio": ref.magnitude_ratio,
                             "lip_correlation": report.lip_correlation, "reference": ref.to_dict()})
                cells = " | ".join("n/a" if r is None else f"{r:.2f}" for r in reach)
                print(f"| {name} | {emotion} | {cells} | {_f(ref.direction_cosine)} | {_f(ref.magnitude_ratio)} | "
                      f"{_f(report.lip_correlation)} |", flush=True)
    print("\nmean over pairs:")
    for emotion in emotions:
        mine = [r for r in rows if r["emotion"] == emotion]
        if not mine:
            continue
        reach_means = [_mean([r["reach"][str(i)] for r in mine]) for i in intensities]
        print(f"  {emotion}: reach " + " / ".join(_f(m) for m in reach_means)
              + f", cos {_f(_mean([r['direction_cosine'] for r in mine]))}"
              + f", magnitude {_f(_mean([r['magnitude_ratio'] for r in mine]))}")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))


def _mean(values: list) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def _f(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    main()
