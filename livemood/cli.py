"""Command line: `livemood [options]` runs the filter; `livemood bench` and `livemood devices` are tools.

The CLI only turns arguments into the config dataclasses; everything else happens in the library.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from livemood.config import (
    BACKENDS,
    CLASSIFIERS,
    DEFAULT_BACKEND,
    DEFAULT_CLASSIFIER,
    DEFAULT_ENGINE,
    DEFAULT_LOOKAHEAD,
    EMOTIONS,
    ENGINES,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_SIGNAL_BASE,
    EXIT_SOURCE_DAMAGED,
    EXIT_USAGE,
    LOOKAHEADS,
    AudioConfig,
    Controls,
    OutputConfig,
    RunConfig,
    RunError,
    Schedule,
    SourceConfig,
    UsageError,
)
from livemood.logs import quiet_native_stderr

if TYPE_CHECKING:
    from livemood.controls import ControlState
    from livemood.live.control import ControlServer
    from livemood.live.pipeline import RunStatus
    from livemood.live.sinks import Sink

log = logging.getLogger("livemood")

# Signals that stop a command as Ctrl-C does (SIGHUP: the terminal went away); Windows has no SIGHUP.
STOP_SIGNALS = tuple(sorted(getattr(signal, name) for name in ("SIGHUP", "SIGINT", "SIGTERM") if hasattr(signal, name)))
_SIGNAL_STATUSES = ", ".join(f"{s.name} {EXIT_SIGNAL_BASE + s}" for s in STOP_SIGNALS)
EXIT_STATUSES = f"""exit status:
  {EXIT_OK}      done: the whole source was written, or the session was stopped with q
         or the control panel
  {EXIT_FAILED}      a device, the disk or the output failed during the run (one line
         says which); no half-written file is left, a file already there is kept
  {EXIT_USAGE}      bad input: an argument, a source that is not a video, refused
         weights; nothing is written
  {EXIT_SOURCE_DAMAGED}      the source file ended early or had damaged packets; the output
         holds what could be read
  {EXIT_SIGNAL_BASE}+N  stopped by signal N ({_SIGNAL_STATUSES}):
         a file or demo run writes no output; a camera session keeps its file"""


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"livemood: error: {message} (see livemood --help)\n")
        raise SystemExit(EXIT_USAGE)


def _add_pipeline_args(p: argparse.ArgumentParser, source_default: str | None) -> None:
    p.add_argument("--source", default=source_default, required=source_default is None,
                   help="camera index, video file, stream URL, or 'demo' (default: %(default)s)")
    p.add_argument("--emotion", default="neutral", help=f"one of: {', '.join(EMOTIONS)} (default: %(default)s)")
    p.add_argument("--intensity", type=float, default=0.5, help="0 (unchanged) to 1 (full) (default: %(default)s)")
    p.add_argument("--expressiveness", type=float, default=1.0,
                   help="scale the speaker's own expressions: 1 as they are, 1.5 half as large again, 0.5 calmer, "
                   "0 the neutral face (0..2, default: %(default)s); the emotion's change comes on top")
    p.add_argument("--engine", default=DEFAULT_ENGINE, help=f"one of: {', '.join(ENGINES)} (default: %(default)s)")
    p.add_argument("--weights", type=Path,
                   help="the neural engine's model: a Wav2Lip-format checkpoint (.pth) or an exported .onnx")
    p.add_argument("--backend", default=DEFAULT_BACKEND,
                   help=f"the neural engine's inference backend, one of: {', '.join(BACKENDS)} (default: %(default)s,"
                   " the fastest this machine can run)")
    p.add_argument("--width", type=int, help="frame width to request from the camera, or to scale a file to")
    p.add_argument("--height", type=int, help="frame height to request from the camera, or to scale a file to")
    p.add_argument("--fps", type=float, help="frame rate to request from the camera")
    p.add_argument("-v", "--verbose", action="store_true", help="log debugging detail")


def _run_config(args: argparse.Namespace, bench: bool) -> RunConfig:
    if (args.width is None) != (args.height is None):
        raise UsageError("give --width and --height together")
    size = (args.width, args.height) if args.width is not None else None
    output = OutputConfig() if bench else OutputConfig(args.output, args.preview, args.device)
    audio = AudioConfig() if bench else AudioConfig(args.mic, args.audio_out, args.lookahead)
    controls = Controls(args.emotion, args.intensity, expressiveness=args.expressiveness)
    return RunConfig(
        source=SourceConfig.parse(args.source, size, args.fps),
        output=output,
        engine=args.engine,
        weights=args.weights,
        backend=args.backend,
        controls=controls,
        schedule=None if bench else _schedule(args, controls),
        audio=audio,
        bench=bench,
    )


def _schedule(args: argparse.Namespace, controls: Controls) -> Schedule | None:
    """The run's timeline of controls: keyframes from a file, the tour, or none (the keys steer)."""
    from livemood.live.keyframes import load_keyframes

    if args.tour is not None and args.keyframes is not None:
        raise UsageError("give --tour or --keyframes, not both")
    if args.keyframes is not None:
        return load_keyframes(args.keyframes, controls)
    return None if args.tour is None else Schedule.tour(args.tour, controls)


def _setup_logging(verbose: bool) -> None:
    # OpenCV warns on stderr for every camera index it fails to open; those failures are ours to report.
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    if not verbose:
        # Nor FFmpeg's lines inside OpenCV ("Connection refused" from a stream): the error says it.
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
        quiet_native_stderr()  # mediapipe's native code logs to fd 2 where no logging setting reaches: filter it there
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", stream=sys.stderr)


def cmd_run(argv: Sequence[str]) -> int:
    p = _Parser(prog="livemood", description="Change the emotion your face shows, live, on a virtual camera.",
                epilog=EXIT_STATUSES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_pipeline_args(p, source_default="0")
    p.add_argument("--output", type=Path, help="write a video file (with the source's audio) instead of a camera")
    p.add_argument("--preview", action="store_true", help="also show the output in a window")
    p.add_argument("--device", help="virtual camera device, e.g. /dev/video10 (default: the first one)")
    p.add_argument("--tour", type=float, metavar="SECONDS",
                   help="show every emotion in turn, switching every SECONDS of video (a showcase; it owns the "
                   "controls: the keys only quit)")
    p.add_argument("--keyframes", type=Path, metavar="FILE",
                   help="for a file or demo source: emotions on the video's timeline, from a CSV (time,emotion,"
                   "intensity[,expressiveness][,ramp]) or JSON file; they own the controls (the keys only quit)")
    p.add_argument("--mic", help="microphone index or name (default: the system's); see `livemood devices`")
    p.add_argument("--audio-out", metavar="DEVICE",
                   help="play the microphone, delayed to match the video, on this output (a virtual microphone)")
    p.add_argument("--control", metavar="[HOST:]PORT",
                   help="serve the control panel and remote-control API here (camera runs: on by default at "
                   "127.0.0.1:8765 or the next free port; files: only when asked)")
    p.add_argument("--no-control", action="store_true", help="no control panel")
    p.add_argument("--control-token", help="a fixed token for scripts (default: a fresh random one each run)")
    p.add_argument("--lookahead", choices=LOOKAHEADS, default=DEFAULT_LOOKAHEAD,
                   help="live audio engines: hold video for the audio window (lip sync) or shift the window into "
                   "the past (no delay) (default: %(default)s)")
    args = p.parse_args(argv)
    _setup_logging(args.verbose)
    from livemood.controls import ControlState
    from livemood.live.keys import GlobalKeys, TerminalKeys, WindowKeys
    from livemood.live.pipeline import assemble
    from livemood.live.stats import StageTimes

    config = _run_config(args, bench=False)
    owner = None if config.schedule is None else config.schedule.origin
    controls, stop = ControlState(config.controls, owner), threading.Event()
    server = _control_server(args, config.source.live, controls)
    watchers, on_status = _panel_wiring(server)
    pipeline = assemble(config, StageTimes(), controls, stop, on_preview_key=WindowKeys(controls, stop.set),
                        watchers=watchers, on_status=on_status)
    with contextlib.ExitStack() as running:
        try:  # until the pipeline runs, a failure or a signal here must still close what assemble opened
            if server is not None:
                server.set_status(engine=pipeline.engine.name)  # before the address is printed: the first GET has it
                server.start()  # after assemble: a bad source is still the only line the user sees
                running.callback(server.close)
            running.enter_context(TerminalKeys(controls, stop.set))
            running.enter_context(GlobalKeys(controls, stop.set))
        except BaseException:
            pipeline.abort()
            raise
        result = pipeline.run()
    log.info("%d frames in %.1f s (%.1f fps)", result.frames, result.wall_s, result.frames / max(result.wall_s, 1e-9))
    if result.interrupted and config.output.file is not None and not pipeline.source.live:
        log.info("stopped before the end of %s: no output file was written", config.source.location)
    elif result.source_damage is not None:
        return _damaged(result.source_damage, config.output.file, result.frames)
    return 0


def _damaged(damage: str, output: Path | None, frames: int) -> int:
    """The one warning line for a file source that was damaged or cut short; its exit status."""
    where = "the output" if output is None else str(output)
    log.warning("livemood: warning: %s; %s holds those %d frames", damage, where, frames)
    return EXIT_SOURCE_DAMAGED


def _control_server(args: argparse.Namespace, live: bool, controls: ControlState) -> ControlServer | None:
    """The control panel's server (not started) if this run gets one: asked for, or a camera run not opted out."""
    from livemood.live.control import DEFAULT_HOST, DEFAULT_PORT, ControlServer, parse_control_address

    if args.no_control or (args.control is None and not live):
        if args.control is not None or args.control_token is not None:
            raise UsageError("--no-control and --control/--control-token contradict each other")
        return None
    host, port = (DEFAULT_HOST, DEFAULT_PORT) if args.control is None else parse_control_address(args.control)
    # The default port moves on if taken; a port the user named is a promise to their scripts.
    return ControlServer(controls, host, port, token=args.control_token, find_free_port=args.control is None)


def _panel_wiring(server: ControlServer | None) -> tuple[list[Sink], Callable[[RunStatus], None] | None]:
    """What feeds the panel from the pipeline: its preview sink and the once-a-second status."""
    if server is None:
        return [], None
    from livemood.live.control import PanelSink

    def on_status(status: RunStatus) -> None:
        server.set_status(fps=status.fps, latency_ms=status.latency_ms, face=status.face)

    return [PanelSink(server)], on_status


def cmd_bench(argv: Sequence[str]) -> int:
    p = _Parser(prog="livemood bench", description="Run the pipeline on a file as fast as it can and time it.")
    _add_pipeline_args(p, source_default=None)
    p.add_argument("--json", action="store_true", help="print one JSON line")
    args = p.parse_args(argv)
    _setup_logging(args.verbose)
    from livemood.live.pipeline import assemble
    from livemood.live.stats import StageTimes

    config = _run_config(args, bench=True)
    times = StageTimes()
    pipeline = assemble(config, times)
    result = pipeline.run()
    report = {
        "engine": pipeline.engine.name,
        "frames": result.frames,
        "fps": round(result.frames / max(result.wall_s, 1e-9), 2),
        "latency_ms": times.latency_ms(),
        "stages_ms": times.stage_p50_ms(),
        "dropped": result.dropped,
    }
    if args.json:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        lat = report["latency_ms"]
        sys.stdout.write(f"{report['engine']}: {report['frames']} frames, {report['fps']} fps, "
                         f"latency p50 {lat['p50']} ms, p95 {lat['p95']} ms, max {lat['max']} ms, "
                         f"dropped {report['dropped']}\n")
        for stage, ms in report["stages_ms"].items():
            sys.stdout.write(f"  {stage:<10} p50 {ms:8.3f} ms\n")
    if result.source_damage is not None:
        log.warning("livemood: warning: %s", result.source_damage)
        return EXIT_SOURCE_DAMAGED
    return 0


def cmd_devices(argv: Sequence[str]) -> int:
    p = _Parser(prog="livemood devices", description="List cameras, microphones and the virtual camera.")
    p.parse_args(argv)
    _setup_logging(False)
    from livemood.live.devices import report

    sys.stdout.write(report() + "\n")
    return 0


def cmd_evaluate(argv: Sequence[str]) -> int:
    p = _Parser(prog="livemood evaluate",
                description="Score the face's expression in an input video and in the filtered output; with "
                "--weights, render the output with that generator checkpoint first and also score lip sync and "
                "visual quality.")
    p.add_argument("--source", type=Path, required=True, help="the original video")
    p.add_argument("--output", type=Path, required=True,
                   help="the filtered video made from it (with --weights: where to write it)")
    p.add_argument("--emotion", help=f"the target emotion, one of: {', '.join(EMOTIONS)}")
    p.add_argument("--weights", type=Path, help="a generator checkpoint to evaluate (renders --output first)")
    p.add_argument("--intensity", type=float, default=0.6, help="with --weights: the intensity (default: %(default)s)")
    p.add_argument("--backend", default=DEFAULT_BACKEND, help="with --weights: the inference backend")
    p.add_argument("--syncnet", type=Path, help="SyncNet_color weights: adds lip-sync distance and confidence")
    p.add_argument("--plot", type=Path, help="per-frame chart (default: next to the output, .evaluate.png)")
    p.add_argument("--classifier", default=DEFAULT_CLASSIFIER, choices=CLASSIFIERS,
                   help="the FER2013 expression classifier that scores the faces (default: %(default)s; the other "
                   "one checks a result against a classifier it was not tuned with)")
    p.add_argument("--reference", type=Path,
                   help="a real take of the same person and sentence with the target emotion: adds how far the "
                   "output went compared with it (reach) and whether its landmarks moved the same way")
    p.add_argument("--keyframes", type=Path, metavar="FILE",
                   help="the keyframes the output was made with: drawn under the plot, and each keyframe's class "
                   "reported over its stretch")
    p.add_argument("--json", action="store_true", help="print the report as one JSON line")
    args = p.parse_args(argv)
    _setup_logging(False)
    from livemood.evaluation.report import format_report
    from livemood.evaluation.videos import evaluate_videos, load_classifier

    if args.syncnet is not None and args.weights is None:
        raise UsageError("--syncnet scores a checkpoint: give --weights too")
    if args.reference is not None and args.emotion is None:
        raise UsageError("--reference compares with a real take of an emotion: give --emotion too")
    keyframes = _evaluated_keyframes(args)
    syncnet = None
    if args.syncnet is not None:  # checked before the render, which takes a while
        from livemood.evaluation.checkpoint import open_syncnet

        syncnet = open_syncnet(args.syncnet)
    if args.weights is not None:
        from livemood.evaluation.checkpoint import render

        render(args.weights, args.source, args.output, args.emotion or "neutral", args.intensity, args.backend)
    plot = args.plot or args.output.with_suffix(".evaluate.png")
    classifier = load_classifier(args.classifier)
    report = evaluate_videos(args.source, args.output, args.emotion, plot, classifier=classifier,
                             keyframes=keyframes)
    result: dict[str, object] = report.to_dict()
    text = format_report(report)
    if args.reference is not None:
        from livemood.evaluation.reference import compare_with_reference

        reference = compare_with_reference(report, args.reference, classifier)
        result["reference"] = reference.to_dict()
        text += "\n" + reference.summary()
    if keyframes is not None:
        from livemood.evaluation.report import keyframe_spans

        spans = keyframe_spans(report, keyframes)
        result["keyframes"] = spans.to_dict()
        text += "\n" + spans.summary()
    if args.weights is not None:
        from livemood.evaluation.checkpoint import score_checkpoint_output

        scores = score_checkpoint_output(args.source, args.output, syncnet)
        result["checkpoint"] = {"weights": str(args.weights), "intensity": args.intensity, **scores.to_dict()}
        text += "\n" + scores.summary()
    sys.stdout.write((json.dumps(result, allow_nan=False) if args.json else text) + "\n")
    return 0


def _evaluated_keyframes(args: argparse.Namespace) -> Schedule | None:
    """The keyframes `evaluate --keyframes` draws and reports; refused with --weights, which renders one emotion."""
    if args.keyframes is None:
        return None
    if args.weights is not None:
        raise UsageError("--weights renders with --emotion; render keyframes with `livemood --keyframes` first")
    from livemood.live.keyframes import load_keyframes

    return load_keyframes(args.keyframes, Controls())


def cmd_export(argv: Sequence[str]) -> int:
    p = _Parser(prog="livemood export",
                description="Export a generator checkpoint to ONNX and check ONNX Runtime against torch.")
    p.add_argument("--weights", type=Path, required=True, help="a Wav2Lip-format checkpoint (.pth)")
    p.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    args = p.parse_args(argv)
    _setup_logging(False)
    from livemood.backends.export import export_onnx, input_names, onnx_parity
    from livemood.models.checkpoint import CheckpointError
    from livemood.models.wav2lip import load_generator

    if not args.weights.is_file():
        raise UsageError(f"weights file not found: {args.weights}")
    if args.out.suffix != ".onnx" or not args.out.resolve().parent.is_dir():
        raise UsageError(f"--out must be a .onnx path in an existing folder, got {args.out}")
    try:
        model = load_generator(args.weights)
    except CheckpointError as e:
        raise UsageError(str(e)) from e
    export_onnx(model, args.out)
    parity = onnx_parity(model, args.out)
    sys.stdout.write(f"wrote {args.out} ({type(model).__name__}, width {model.width:g}, inputs "
                     f"{', '.join(input_names(model))}); "
                     f"max|diff| from float64: ONNX Runtime {parity.onnx:.2e}, torch fp32 {parity.torch:.2e} "
                     f"({'ok' if parity.ok else 'FAILED'}, tolerance {parity.tolerance:.2e})\n")
    return 0 if parity.ok else 1


def cmd_train(argv: Sequence[str]) -> int:
    from livemood.training.losses import LossWeights
    from livemood.training.train import MASKS, TrainConfig, train

    p = _Parser(prog="livemood train", description="Train the Wav2Lip-Emotion generator on talking-face videos "
                "(single GPU, CPU, or several processes under torchrun).")
    p.add_argument("--data", type=Path, required=True, help="folder of videos with audio (MEAD's layout is recognised)")
    p.add_argument("--out", type=Path, required=True, help="folder for checkpoints and losses.csv")
    p.add_argument("--cache", type=Path, help="preprocessed-clip cache (default: OUT/cache)")
    p.add_argument("--plain", action="store_true", help="a plain Wav2Lip generator (no emotion input), e.g. per pair")
    p.add_argument("--width", type=float, default=1.0, help="channel multiplier, 0.5 = slim (default: %(default)s)")
    p.add_argument("--init", type=Path, help="generator checkpoint to start from (e.g. the original wav2lip.pth)")
    p.add_argument("--syncnet", type=Path, help="pre-trained SyncNet_color checkpoint (enables the sync loss)")
    p.add_argument("--resume", type=Path, help="continue from a checkpoint of this trainer")
    p.add_argument("--paired", action="store_true",
                   help="input from the neutral clip, targets from the same sentence in another emotion (MEAD)")
    p.add_argument("--mask", choices=MASKS, default="lower", help="what the input hides (default: %(default)s)")
    p.add_argument("--steps", type=int, default=1000, help="total optimisation steps (default: %(default)s)")
    p.add_argument("--batch", type=int, default=8, help="global batch size (default: %(default)s)")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default: %(default)s)")
    defaults = LossWeights()
    for term in ("l1", "sync", "gan", "emotion"):
        p.add_argument(f"--{term}-weight", type=float, default=getattr(defaults, term),
                       help=f"weight of the {term} loss (default: %(default)s)")
    p.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints")
    p.add_argument("--log-every", type=int, default=10, help="steps between loss log lines")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    p.add_argument("--workers", type=int, default=0, help="data loader processes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-v", "--verbose", action="store_true", help="log debugging detail")
    args = p.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        weights = LossWeights(args.l1_weight, args.sync_weight, args.gan_weight, args.emotion_weight)
    except ValueError as e:
        raise UsageError(str(e)) from e
    config = TrainConfig(
        data=args.data, out=args.out, cache=args.cache, conditioned=not args.plain, width=args.width,
        init=args.init, syncnet=args.syncnet, resume=args.resume, paired=args.paired, mask=args.mask,
        steps=args.steps, batch=args.batch, lr=args.lr, weights=weights, checkpoint_every=args.checkpoint_every,
        log_every=args.log_every, device=args.device, workers=args.workers, seed=args.seed)
    train(config)
    return 0


COMMANDS = {"bench": cmd_bench, "devices": cmd_devices, "evaluate": cmd_evaluate, "export": cmd_export,
            "train": cmd_train}


class _StopSignals:
    """While a command runs, each of STOP_SIGNALS stops it the way Ctrl-C does: KeyboardInterrupt in the main
    thread, so the run cleans up and a file cut short is not kept. `received` is the first one's number.

    A repeat is not raised again: a second KeyboardInterrupt in the middle of the clean-up would leave a temporary
    file behind. A signal this process was started ignoring (`nohup` ignores SIGHUP) stays ignored.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Callable[[int, object], object] | int | None] = {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():  # where Python runs signal handlers
            for signum in STOP_SIGNALS:
                previous = signal.getsignal(signum)
                if previous is not signal.SIG_IGN:
                    self._previous[signum] = previous
                    signal.signal(signum, self._stop)
        return self

    def _stop(self, signum: int, frame: object) -> None:
        if self.received is None:
            self.received = signum
            raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            # Once stopping, the process is on its way out: a repeat must not end it by another status.
            restored = signal.SIG_IGN if self.received is not None else previous
            signal.signal(signum, signal.SIG_DFL if restored is None else restored)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit status (EXIT_STATUSES), after one line on stderr for a failure."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = COMMANDS.get(argv[0], cmd_run) if argv else cmd_run
    if command is not cmd_run:
        argv = argv[1:]
    with _StopSignals() as stop:
        try:
            code = command(argv)
        except KeyboardInterrupt:  # stopped outside a run's frame loop, which reports its own interruption
            signum = stop.received or signal.SIGINT  # none of ours: Python's own Ctrl-C
            sys.stderr.write(f"livemood: stopped by {signal.Signals(signum).name}\n")
            code = EXIT_SIGNAL_BASE + signum
        except UsageError as e:
            sys.stderr.write(f"livemood: error: {e}\n")
            code = EXIT_USAGE
        except RunError as e:
            sys.stderr.write(f"livemood: error: {e}\n")
            code = EXIT_FAILED
    # A run that caught the signal itself ends normally: its status still says it was stopped.
    return code if stop.received is None else EXIT_SIGNAL_BASE + stop.received


if __name__ == "__main__":
    raise SystemExit(main())
