"""The README's expressiveness figure: one clip rendered at expressiveness 0.5 and 1.5, the motion of its brows,
lids and lip corners around the neutral face over time, input vs each output (`livemood evaluate`'s measure).

    .venv/bin/python tools/expressiveness_plot.py [--source ../shared/media/talk_d.mp4] [--out docs/expressiveness.png]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from livemood.config import Controls, OutputConfig, RunConfig, SourceConfig
from livemood.evaluation.videos import evaluate_videos
from livemood.live.pipeline import assemble
from livemood.live.stats import StageTimes

LEVELS = (0.5, 1.5)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", type=Path, default=Path(__file__).resolve().parents[2] / "shared/media/talk_d.mp4")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs/expressiveness.png")
    args = p.parse_args()
    fig = Figure(figsize=(10, 4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    with tempfile.TemporaryDirectory() as tmp:
        for k, level in enumerate(LEVELS):
            out = Path(tmp) / f"x{level}.mp4"
            config = RunConfig(SourceConfig.parse(str(args.source)), OutputConfig(out),
                               controls=Controls(expressiveness=level))
            assemble(config, StageTimes()).run()
            report = evaluate_videos(args.source, out, None, None, progress=False)
            s = report.series
            if k == 0:
                ax.plot(s.time_s, s.motion_source, color="black", label="input (expressiveness 1)")
            ax.plot(s.time_s, s.motion_output, label=f"expressiveness {level:g}: RMS ratio "
                    f"{report.expressiveness_ratio:.2f} (pose-free {report.expressiveness_ratio_pose_free:.2f}), "
                    f"lip r {report.lip_correlation:.3f}")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("brows, lids, lip corners: RMS from neutral (face units)")
    ax.set_title(f"the speaker's own expressions, scaled ({args.source.name})")
    ax.legend(loc="upper right")
    fig.savefig(args.out, format="png")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
