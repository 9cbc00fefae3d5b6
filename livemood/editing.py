"""The Python API for editors and scripts: `edit` renders a recorded video through the pipeline `livemood --source
IN --output OUT` runs, with the emotion constant or on a timeline of keyframes::

    import livemood

    result = livemood.edit("take3.mp4", "take3_edit.mp4",
                           keyframes=[(0.0, "neutral", 0), (2.5, "happy", 0.7), ("00:06.000", "sad", 0.5, None, 1.0)],
                           expressiveness=1.2, progress=lambda done, total: print(done, "/", total))
    print(result.frames, "frames in", round(result.seconds, 1), "s")

`livemood.edit` is this module's `edit`, imported on first use so that `import livemood` stays light.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from livemood.config import DEFAULT_BACKEND, DEFAULT_ENGINE, Controls, OutputConfig, RunConfig, SourceConfig, UsageError
from livemood.live.keyframes import KeyframeInput, schedule_from
from livemood.live.pipeline import assemble
from livemood.live.sinks import Progress
from livemood.live.stats import StageTimes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EditResult:
    """What `edit` wrote."""

    output: Path
    frames: int  # frames written: every frame of the source
    seconds: float  # wall-clock time of the render
    engine_errors: int  # frames the engine failed on, written unchanged (the log says why)
    source_damage: str | None = None  # the source was cut short or had damaged packets (one line): the output holds
    # the frames that could be read; None for a clean source


def edit(source: str | Path, output: str | Path, *, keyframes: KeyframeInput | None = None,
         emotion: str = "neutral", intensity: float = 0.5, expressiveness: float = 1.0,
         engine: str = DEFAULT_ENGINE, weights: str | Path | None = None, backend: str = DEFAULT_BACKEND,
         size: tuple[int, int] | None = None, progress: Progress | None = None) -> EditResult:
    """Render `source` (a video file, or "demo") into `output` with every frame kept and the audio copied.

    `keyframes` puts the controls on the video's timeline: a `.csv` / `.json` file (as `livemood --keyframes`) or a
    list of `(time, emotion, intensity[, expressiveness[, ramp]])` tuples or dicts with those keys; times are
    seconds from the first frame or "[HH:]MM:SS.mmm" text. Without keyframes `emotion` and `intensity` hold for
    the whole video; with them they hold before the first keyframe. `expressiveness` is the run's own, used by
    keyframes that give none. `engine`, `weights`, `backend` and `size` (width, height) are the CLI's options.

    `progress(done, total)` is called from the frame loop after each frame is written (`total`: the frames the
    file declares, or None); keep it cheap, and raise from it to cancel (nothing is written then).

    Raises `livemood.config.UsageError` (one line naming the problem, e.g. the keyframe file's line) for bad
    input, before anything is opened or written; KeyboardInterrupt if interrupted (nothing is written either).
    """
    config_source = SourceConfig.parse(str(source), size)
    if config_source.live:
        raise UsageError(f"edit() renders recorded video: give a file or 'demo', not the camera or stream {source}")
    controls = Controls(emotion, intensity, expressiveness=expressiveness)
    config = RunConfig(
        source=config_source,
        output=OutputConfig(Path(output)),
        engine=engine,
        weights=None if weights is None else Path(weights),
        backend=backend,
        controls=controls,
        schedule=None if keyframes is None else schedule_from(keyframes, controls),
    )
    result = assemble(config, StageTimes(), progress=progress).run()
    if result.interrupted:
        raise KeyboardInterrupt
    if result.source_damage is not None:
        log.warning("%s; %s holds those %d frames", result.source_damage, output, result.frames)
    return EditResult(Path(output), result.sent, result.wall_s, result.engine_errors, result.source_damage)
