"""The one place where stages are wired: source → engine → sinks, with pacing, guards and timing."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from livemood.audio.feed import MAX_EXTRA_WAIT_S, AudioFeed, open_audio_feed
from livemood.audio.mel import AudioUnavailable, Lookahead
from livemood.config import Controls, RunConfig, RunError, Schedule, SourceConfig, SourceKind, UsageError
from livemood.controls import ControlState
from livemood.engines import Engine, make_engine
from livemood.engines.warp import WarpEngine
from livemood.face.tracker import Face, FaceTracker
from livemood.frames import Frame, now
from livemood.live.demo import DEMO_SECONDS, DemoSource
from livemood.live.handoff import Closed
from livemood.live.sinks import (
    LIVE_TIME_BASE,
    CallbackSink,
    FileSink,
    NullSink,
    PreviewSink,
    Progress,
    ProgressSink,
    Sink,
    VirtualCameraSink,
)
from livemood.live.sources import CameraSource, FileSource, ReplaySource, Source
from livemood.live.stats import StageTimes
from livemood.live.watch import FaceWatch
from livemood.logs import Episode, first_line
from livemood.video import VideoReader

log = logging.getLogger(__name__)

STATUS_EVERY_S = 1.0  # live status line period


@dataclass(frozen=True)
class RunResult:
    frames: int  # source frames processed
    sent: int  # frames handed to the sinks, repeats included
    repeated: int  # ticks that re-sent the last frame because no new one had arrived
    dropped: int  # frames the source discarded (live sources only)
    engine_errors: int  # frames the engine failed on (sent raw instead)
    wall_s: float
    interrupted: bool
    tracker_errors: int = 0  # frames the face tracker failed on (the engine got no face: sent raw)
    source_damage: str | None = None  # a file source's damage (cut short, packets skipped), one line; None if clean


@dataclass(frozen=True)
class RunStatus:
    """What the pipeline reports about once a second to whoever asked (`Pipeline(on_status=...)`)."""

    fps: float  # frames sent per second over the last report period
    latency_ms: dict[str, float]  # capture to output: p50, p95, max
    face: bool  # the latest frame had a tracked face


class Pipeline:
    """Runs a source through an engine into sinks until the source ends or the user interrupts.

    Paced mode (live sources, or a virtual camera as output) sends one frame per tick of a fixed clock at the
    source's frame rate: the newest frame if one arrived during the tick, else the last one again, so a stalled
    camera never freezes the call. Unpaced mode (files) processes every frame as fast as possible.

    Each frame's controls come from `controls` (the hotkeys' state) or, with a `schedule` (keyframes, the tour),
    from the schedule at the frame's own time since the first frame: the schedule then owns the controls.
    """

    def __init__(
        self,
        source: Source,
        engine: Engine,
        sinks: Sequence[Sink],
        controls: ControlState,
        times: StageTimes,
        paced: bool,
        status: bool = False,
        tracker: FaceTracker | None = None,
        audio: AudioFeed | None = None,
        schedule: Schedule | None = None,
        stop: threading.Event | None = None,
        on_status: Callable[[RunStatus], None] | None = None,
    ) -> None:
        self.source = source
        self.tracker = tracker
        self.audio = audio
        self.schedule = schedule
        self._first_time_s: float | None = None  # the schedule's zero: the first frame's time
        self._scheduled: Controls | None = None  # what the schedule gave the last frame
        self.engine = engine
        self.sinks = list(sinks)
        self.controls = controls
        self.times = times
        self.paced = paced
        self.status = status
        self._frames = self._sent = self._repeated = self._engine_errors = self._tracker_errors = 0
        # A failing stage is told once when it starts failing and once when it works again.
        self._engine_fault, self._tracker_fault = Episode(log), Episode(log)
        self._face_watch = FaceWatch(tracker) if tracker is not None else None
        self._t_start = now()
        self.stop = stop or threading.Event()  # set by a quit key; checked once per frame
        self.on_status = on_status
        self._face_seen = False

    def run(self) -> RunResult:
        """Process until the end; closes the source, engine and sinks whatever happens."""
        t_start = self._t_start = now()
        interrupted = False
        try:
            self.source.start()
            self._loop_paced() if self.paced else self._loop_unpaced()
            if self.stop.is_set():  # a quit key ends the run as Ctrl-C does
                interrupted = True
                log.info("stopped by a quit key")
        except KeyboardInterrupt:
            interrupted = True
            log.info("interrupted")
        except BaseException:
            self._shutdown(finish=False)
            raise
        # A live session ends by interruption and its output is complete; a file cut short is not kept.
        self._shutdown(finish=self.source.live or not interrupted)
        for errors, stage in ((self._tracker_errors, "face tracker"), (self._engine_errors, "engine")):
            if errors:
                log.warning("the %s failed on %d of %d frames; those were sent unchanged", stage, errors,
                            self._frames)
        return RunResult(self._frames, self._sent, self._repeated, self.source.dropped, self._engine_errors,
                         now() - t_start, interrupted, self._tracker_errors, self.source.damage)

    def abort(self) -> None:
        """Close everything without running (after a failure between `assemble` and `run`): no file is kept."""
        self._shutdown(finish=False)

    def _loop_unpaced(self) -> None:
        next_report = now() + STATUS_EVERY_S
        while not self.stop.is_set():
            if self.on_status is not None and now() >= next_report:  # files report too when someone listens
                next_report = now() + STATUS_EVERY_S
                self._report()
            try:
                frame = self.source.get()
            except Closed:
                return
            if frame is not None:
                window = self.audio.window(frame.time_s) if self._uses_audio else None
                self._send(self._process(frame, window), frame)

    @property
    def _uses_audio(self) -> bool:
        return self.audio is not None and self.engine.needs_audio

    def _loop_paced(self) -> None:
        period = 1.0 / self.source.fps
        tick = now()
        last: tuple[np.ndarray, Frame] | None = None
        held: deque[Frame] = deque()  # live frames waiting for their audio (the look-ahead)
        next_report = tick + STATUS_EVERY_S
        while not self.stop.is_set():
            try:
                frame = self.source.get(timeout=max(0.0, tick + period - now()))
            except Closed:
                return
            if self.audio is not None:
                self.audio.poll()
            if frame is not None:
                held.append(frame)
            ready = self._take_ready(held)
            if ready is not None:
                last = (self._process(*ready), ready[0])
                self._send(*last)
            elif last is not None:
                self._repeated += 1
                self._send(last[0], last[1], fresh=False)
            tick += period
            t = now()
            if t > tick + period:  # fell more than a tick behind: re-anchor instead of bursting
                tick = t
            elif t < tick:
                time.sleep(tick - t)
            if t >= next_report:
                next_report = t + STATUS_EVERY_S
                self._report()

    def _take_ready(self, held: deque[Frame]) -> tuple[Frame, np.ndarray | None] | None:
        """The oldest held frame with its audio window once that audio has arrived (or waited too long, or the
        microphone is lost)."""
        if not held:
            return None
        if not self._uses_audio:
            return held.popleft(), None
        assert self.audio is not None
        frame = held[0]
        window = self.audio.window(frame.time_s)
        if window is None and not self.audio.stalled and now() - frame.t_capture < self.audio.wait_s + MAX_EXTRA_WAIT_S:
            return None
        return held.popleft(), window

    def _process(self, frame: Frame, window: np.ndarray | None) -> np.ndarray:
        """The engine's output for this frame, or the frame itself if the engine fails."""
        self._frames += 1
        controls = self.controls.get() if self.schedule is None else self._controls_at(frame.time_s)
        face = None
        if self.tracker is not None:
            with self.times.time("face"):
                face = self._track(frame)
        t0 = now()
        try:
            out = self.engine.process(frame.image, face, window, controls)
            if out.shape != frame.image.shape or out.dtype != np.uint8:
                raise ValueError(f"engine returned {out.shape} {out.dtype}, expected {frame.image.shape} uint8")
        except Exception as e:
            self._engine_errors += 1
            self._engine_fault.start("engine %s failed; sending frames unchanged until it works again (%s)",
                                     self.engine.name, _one_line(e), level=logging.ERROR)
            log.debug("engine %s failed", self.engine.name, exc_info=True)  # the traceback, with -v
            return frame.image
        finally:
            self.times.add("engine", now() - t0)
        self._engine_fault.end("engine %s works again", self.engine.name)
        return out

    def _track(self, frame: Frame) -> Face | None:
        """The tracked face, or None (also when the tracker fails: the engine then leaves the frame as it is)."""
        assert self.tracker is not None and self._face_watch is not None
        try:
            # time_s is the file's timeline or, live, the capture clock: increasing either way.
            face = self.tracker.track(frame.image, round(frame.time_s * 1e3))
        except Exception as e:
            self._tracker_errors += 1
            self._tracker_fault.start("the face tracker failed; sending frames unchanged until it works again (%s)",
                                      _one_line(e), level=logging.ERROR)
            log.debug("the face tracker failed", exc_info=True)
            return None
        self._tracker_fault.end("the face tracker works again")
        self._face_seen = face is not None
        self._face_watch.update(frame.image, face, frame.time_s)
        return face

    def _controls_at(self, time_s: float) -> Controls:
        """The schedule's controls for a frame at `time_s` on the source's timeline; a change is logged once."""
        assert self.schedule is not None
        if self._first_time_s is None:
            self._first_time_s = time_s
        t = time_s - self._first_time_s
        controls = self.schedule.controls_at(t)
        if controls != self._scheduled:
            self._scheduled = controls
            log.info("%.3f s: %s %.2f, expressiveness %.2f, within %.2f s (%s)", t, controls.emotion,
                     controls.intensity, controls.expressiveness, controls.ramp_s, self.schedule.origin)
        return controls

    def _send(self, image: np.ndarray, frame: Frame, fresh: bool = True) -> None:
        t0 = now()
        # Files keep their own timeline; a live session's output timeline starts when the run starts.
        time_s = t0 - self._t_start if self.source.live else frame.time_s
        for sink in self.sinks:
            sink.send(image, time_s)
        t1 = now()
        self.times.add("output", t1 - t0)
        if fresh:
            self.times.add_latency(t1 - frame.t_capture)
        self._sent += 1

    def _report(self) -> None:
        """Once a second when live: the audio out follows the measured latency; the status line if asked for."""
        window = self.times.take()
        lat = window.latency_ms()
        if self.audio is not None and window.latencies:
            self.audio.set_output_delay(lat["p50"] / 1e3)
        fps = len(window.latencies) / STATUS_EVERY_S
        if self.status:
            stages = "  ".join(f"{k} {v:.1f}ms" for k, v in window.stage_p50_ms().items())
            log.info("%4.1f fps  latency p50 %.0fms p95 %.0fms  %s  dropped %d  repeated %d",
                     fps, lat["p50"], lat["p95"], stages, self.source.dropped, self._repeated)
        if self.on_status is not None:
            self.on_status(RunStatus(fps, lat, self._face_seen))

    def _shutdown(self, finish: bool) -> None:
        self.source.close()
        self.engine.close()
        if self.tracker is not None:
            self.tracker.close()
        if self.audio is not None:
            self.audio.close()
        failed: Exception | None = None  # the first sink that failed to finish; every other sink still closes
        for sink in self.sinks:
            try:
                sink.close() if finish else sink.abort()
            except RunError as e:  # already one line, and the sink left nothing behind (a disk that filled up)
                failed = failed or e
            except Exception as e:
                log.exception("closing %s failed", type(sink).__name__)
                failed = failed or e
        if finish and failed is not None:
            raise failed


def _one_line(e: BaseException) -> str:
    """An exception as one line for the log: its type and the first line of its message."""
    line = first_line(e)
    return line if line == type(e).__name__ else f"{type(e).__name__}: {line}"


def open_source(config: SourceConfig, times: StageTimes | None = None, endless: bool = False,
                replay: bool = False) -> Source:
    """Open the source a `SourceConfig` names; raises UsageError with one clear line if it cannot.

    `endless` makes the demo run until stopped (for the virtual camera) instead of a fixed length; `replay`
    decodes a file into memory first (`ReplaySource`, for benchmarks).
    """
    if config.kind is SourceKind.CAMERA:
        return CameraSource(int(config.location), config.size, config.fps, times)
    if config.kind is SourceKind.STREAM:
        return CameraSource(config.location, config.size, config.fps, times)
    if config.kind is SourceKind.FILE:
        kind = ReplaySource if replay else FileSource
        return kind(Path(config.location), config.size, times)
    return DemoSource(config.size, seconds=None if endless else DEMO_SECONDS, times=times)


def _abort(sinks: list[Sink]) -> None:
    for sink in reversed(sinks):
        sink.abort()


def _uses_expressiveness(config: RunConfig) -> bool:
    changes = [config.controls] if config.schedule is None else [
        config.schedule.initial, *(k.controls for k in config.schedule.keyframes)]
    return any(c.expressiveness != 1.0 for c in changes)


def assemble(config: RunConfig, times: StageTimes, controls: ControlState | None = None,
             stop: threading.Event | None = None, on_preview_key: Callable[[int], None] | None = None,
             watchers: Sequence[Sink] = (), on_status: Callable[[RunStatus], None] | None = None,
             progress: Progress | None = None) -> Pipeline:
    """Open the source first (a bad source creates nothing), then the engine and sinks.

    `controls` and `stop` are shared with whatever steers the run (keys, the control panel); by default the
    pipeline makes its own. `on_preview_key` gets the preview window's key codes; `watchers` are extra sinks that
    see every output frame (the panel's preview); `on_status` gets a `RunStatus` about once a second.
    `progress(done, total)` hears of every frame a file job writes, instead of the terminal's progress bar.
    """
    to_camera = not config.bench and config.output.file is None
    with ExitStack() as opened:  # on any failure, everything opened so far is closed again (sinks: aborted)
        source = open_source(config.source, times, endless=to_camera, replay=config.bench)
        opened.callback(source.close)
        engine = make_engine(config.engine, config.weights, config.backend)
        opened.callback(engine.close)
        if isinstance(engine, WarpEngine) and config.source.kind is SourceKind.FILE and _uses_expressiveness(config):
            with VideoReader(Path(config.source.location), "source", config.source.size, warn_damage=False) as ahead:
                engine.neutral.look_ahead(iter(ahead.read, None))
        sinks: list[Sink] = []
        opened.callback(_abort, sinks)  # the list as it is at the failure
        if config.bench:
            sinks.append(NullSink())
        elif config.output.file is not None:
            sinks.append(FileSink(config.output.file, source.size, source.fps, source.audio_path,
                                  source.time_base or LIVE_TIME_BASE))
            if progress is not None:
                sinks.append(CallbackSink(progress, source.frame_count))
            elif not source.live:
                sinks.append(ProgressSink(source.frame_count, config.output.file.name))
        else:
            try:
                sinks.append(VirtualCameraSink(source.size, source.fps, config.output.device))
            except UsageError as e:
                if not config.output.preview:
                    raise
                log.warning("%s\nShowing the preview window only.", e)
        if config.output.preview:
            sinks.append(PreviewSink(on_preview_key))
        sinks.extend(watchers)
        tracker = FaceTracker() if engine.needs_face else None
        if tracker is not None:
            opened.callback(tracker.close)
        try:
            audio = open_audio_feed(source.live, source.audio_path, engine.needs_audio, config.audio.mic,
                                    config.audio.audio_out, Lookahead(config.audio.lookahead))
        except AudioUnavailable as e:
            raise UsageError(f"the {engine.name} engine needs audio: {e}") from e
        opened.pop_all()  # all open: from here the pipeline closes them
    if audio is not None and audio.live and engine.needs_audio:
        log.info("video is held %.0f ms for its audio look-ahead (%s)", audio.wait_s * 1e3, audio.lookahead.value)
    paced = source.live or any(sink.live for sink in sinks)
    return Pipeline(source, engine, sinks, controls or ControlState(config.controls), times, paced, status=paced,
                    tracker=tracker, audio=audio, schedule=config.schedule, stop=stop, on_status=on_status)
