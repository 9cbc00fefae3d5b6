"""Settings, checked once at start-up. The CLI only builds these dataclasses."""

from __future__ import annotations

import bisect
import dataclasses
import enum
import math
import os
from dataclasses import dataclass
from pathlib import Path

EMOTIONS: tuple[str, ...] = (
    "neutral",
    "happy",
    "sad",
    "angry",
    "surprised",
    "fearful",
    "disgusted",
    "contempt",
)
ENGINES: tuple[str, ...] = ("warp", "neural", "passthrough", "identity")
DEFAULT_ENGINE = "warp"
BACKENDS: tuple[str, ...] = ("auto", "tensorrt", "onnxruntime", "onnxruntime-cpu", "torch", "torch-cpu")
DEFAULT_BACKEND = "auto"  # the fastest this machine can run (see livemood.backends)
# Pre-trained FER2013 expression classifiers `livemood evaluate` can score with (see livemood.models.expression).
CLASSIFIERS: tuple[str, ...] = ("fer2013-cnn", "mini-xception")
DEFAULT_CLASSIFIER = "fer2013-cnn"  # also the neural engine's training objective
# How live speech engines get the audio window that lies after a frame (see livemood.audio.mel.Lookahead).
LOOKAHEADS: tuple[str, ...] = ("delay-video", "shift-window")
DEFAULT_LOOKAHEAD = "delay-video"

CAMERA_FALLBACK_FPS = 30.0  # frames per second that pace a camera which reports no usable rate
MAX_FPS = 120.0
MAX_EXPRESSIVENESS = 2.0
# A frame this close before a keyframe's time is at it: a time written in decimal (0.6, or the tour's 3 × 0.2) and
# a frame's stamp (600 ms) may differ in the last bit.
KEYFRAME_TOLERANCE_S = 1e-6
RAMP_TIME_S = 0.2  # a change of emotion, intensity or bypass takes at most this long, unless a keyframe says otherwise


# Exit statuses, documented in `livemood --help` and the README; a scripted batch tells the cases apart.
EXIT_OK = 0
EXIT_FAILED = 1  # a device, disk or output failed during the run (RunError): one line, no half-written file
EXIT_USAGE = 2  # bad input: arguments, a source that is not a video, weights that are refused (UsageError)
EXIT_SOURCE_DAMAGED = 3  # a file source ended early or had damaged packets: the output holds what could be read
EXIT_SIGNAL_BASE = 128  # stopped by a signal: 128 + its number (SIGHUP 129, SIGINT 130, SIGTERM 143); no output


class UsageError(Exception):
    """A problem with what the user asked for: reported as one line on stderr, exit status 2."""


class RunError(Exception):
    """A device, disk or file failing during a run: reported as one line on stderr, exit status 1."""


class SourceKind(enum.Enum):
    CAMERA = "camera"  # a local camera by index, read by OpenCV
    STREAM = "stream"  # a network stream (rtsp://, http://) read by OpenCV as a live source
    FILE = "file"  # a media file decoded by PyAV, every frame kept
    DEMO = "demo"  # the embedded animated portrait


@dataclass(frozen=True)
class SourceConfig:
    kind: SourceKind
    location: str  # camera index as text, URL, or file path; "demo" for the demo
    size: tuple[int, int] | None = None  # (width, height) to request (camera) or scale to (files)
    fps: float | None = None  # frame rate to request from a camera

    @property
    def live(self) -> bool:
        """Live sources keep only their newest frame; files and the demo drop nothing."""
        return self.kind in (SourceKind.CAMERA, SourceKind.STREAM)

    @classmethod
    def parse(cls, text: str, size: tuple[int, int] | None = None, fps: float | None = None) -> SourceConfig:
        """`0`..`N` is a camera, `demo` the embedded portrait, `scheme://…` a stream, anything else a file."""
        if text.isdigit():
            return cls(SourceKind.CAMERA, text, size, fps)
        if text == "demo":
            return cls(SourceKind.DEMO, text, size, fps)
        if "://" in text:
            return cls(SourceKind.STREAM, text, size, fps)
        path = Path(text)
        if not path.exists():
            if text.lstrip("+-").isdigit():
                raise UsageError(f"not a valid source: {text!r} is not a camera index (cameras are numbered 0, 1, …; "
                                 "see `livemood devices`), nor a video file, stream URL or 'demo'")
            raise UsageError(f"source file not found: {text}")
        if not path.is_file():
            raise UsageError(f"source is not a file: {text}")
        return cls(SourceKind.FILE, text, size, fps)


@dataclass(frozen=True)
class Controls:
    """What the user steers live: one immutable snapshot per frame."""

    emotion: str = "neutral"
    intensity: float = 0.0  # 0 = unchanged face, 1 = full expression
    bypass: bool = False  # True sends the camera image through untouched
    expressiveness: float = 1.0  # scales the speaker's own expressions: 1 as they are, 0 neutral, 2 twice as large
    ramp_s: float = RAMP_TIME_S  # the engines reach these controls from the previous ones within this many seconds
    neutral_takes: int = 0  # times the user said "this is my neutral face now" (the n key): engines retake it

    def __post_init__(self) -> None:
        if self.emotion not in EMOTIONS:
            raise UsageError(f"unknown emotion {self.emotion!r}; choose one of: {', '.join(EMOTIONS)}")
        if not 0.0 <= self.intensity <= 1.0:
            raise UsageError(f"intensity must be between 0 and 1, got {self.intensity:g}")
        if not 0.0 <= self.expressiveness <= MAX_EXPRESSIVENESS:
            raise UsageError(f"expressiveness must be between 0 and {MAX_EXPRESSIVENESS:g}, "
                             f"got {self.expressiveness:g}")
        if not 0.0 <= self.ramp_s < math.inf:
            raise UsageError(f"ramp must be 0 or more seconds, got {self.ramp_s:g}")


@dataclass(frozen=True)
class Keyframe:
    """From `time_s` on (seconds from the source's first frame) the controls are `controls`, reached from the
    previous ones within `controls.ramp_s`."""

    time_s: float
    controls: Controls

    def check_after(self, previous: Keyframe | None) -> None:
        """Raise UsageError unless this keyframe can follow `previous` (None: it is the first)."""
        if not 0.0 <= self.time_s < math.inf:
            raise UsageError(f"time must be 0 or more seconds, got {self.time_s:g}")
        if previous is not None and self.time_s <= previous.time_s:
            raise UsageError(f"time {self.time_s:.3f} s does not come after the previous keyframe's "
                             f"{previous.time_s:.3f} s")


@dataclass(frozen=True)
class Schedule:
    """Controls on the source's timeline: keyframes from a file, or the tour. Each frame's controls come from its
    own time (`controls_at`), so a file renders the same way every time, whatever the machine's speed."""

    keyframes: tuple[Keyframe, ...]
    origin: str  # what made it, for messages: "keyframes from take3.csv", "the tour (--tour 1.5)"
    initial: Controls = Controls()  # before the first keyframe
    loop_s: float | None = None  # None: played once; else it starts again every loop_s seconds (the tour)

    def __post_init__(self) -> None:
        if not self.keyframes:
            raise UsageError(f"{self.origin}: no keyframes")
        for previous, keyframe in zip((None, *self.keyframes[:-1]), self.keyframes, strict=True):
            try:
                keyframe.check_after(previous)
            except UsageError as e:
                raise UsageError(f"{self.origin}: {e}") from None
        if self.loop_s is not None and not self.keyframes[-1].time_s < self.loop_s < math.inf:
            raise UsageError(f"{self.origin}: a loop of {self.loop_s:g} s must be longer than its last keyframe")

    def controls_at(self, time_s: float) -> Controls:
        """The controls in force at `time_s` seconds from the first frame."""
        time_s += KEYFRAME_TOLERANCE_S
        if self.loop_s is not None:
            time_s %= self.loop_s
        i = bisect.bisect_right([k.time_s for k in self.keyframes], time_s)
        return self.initial if i == 0 else self.keyframes[i - 1].controls

    def spans(self, end_s: float) -> list[tuple[float, float, Controls]]:
        """(start s, end s, controls) of each keyframe's stretch (and the time before the first) up to `end_s`,
        loops unrolled."""
        period = self.loop_s or 0.0
        changes: list[tuple[float, Controls]] = []
        for lap in range(math.ceil(end_s / period) if self.loop_s else 1):
            if self.keyframes[0].time_s > 0.0:
                changes.append((lap * period, self.initial))
            changes += [(lap * period + k.time_s, k.controls) for k in self.keyframes]
        changes = [(t, c) for t, c in changes if t < end_s]
        ends = [t for t, _ in changes[1:]] + [end_s]
        return [(t, end, c) for (t, c), end in zip(changes, ends, strict=True)]

    @classmethod
    def tour(cls, every_s: float, base: Controls) -> Schedule:
        """Every emotion in turn at `base`'s intensity, switching every `every_s` seconds, round and round."""
        if not 0.0 < every_s < math.inf:
            raise UsageError(f"--tour needs a positive number of seconds, got {every_s:g}")
        keyframes = tuple(Keyframe(i * every_s, dataclasses.replace(base, emotion=emotion))
                          for i, emotion in enumerate(EMOTIONS))
        return cls(keyframes, f"the tour (--tour {every_s:g})", base, loop_s=every_s * len(EMOTIONS))


@dataclass(frozen=True)
class OutputConfig:
    file: Path | None = None  # write a video file instead of opening the virtual camera
    preview: bool = False  # also show a window
    device: str | None = None  # virtual-camera device (e.g. /dev/video10), None = the backend's first

    def __post_init__(self) -> None:
        if self.file is not None:
            folder = self.file.resolve().parent
            if not folder.is_dir():
                raise UsageError(f"output folder does not exist: {folder}")
            if self.file.is_dir():
                raise UsageError(f"output path is a folder: {self.file}")
            if not self.file.suffix:
                raise UsageError(f"output file needs an extension such as .mp4: {self.file}")


def check_size_fps(size: tuple[int, int] | None, fps: float | None) -> None:
    """Reject impossible capture settings before any device is opened."""
    if size is not None and (size[0] < 16 or size[1] < 16 or size[0] > 7680 or size[1] > 4320):
        raise UsageError(f"size {size[0]}x{size[1]} is outside 16x16..7680x4320")
    if fps is not None and not 0 < fps <= MAX_FPS:
        raise UsageError(f"fps must be in (0, {MAX_FPS:g}], got {fps:g}")


@dataclass(frozen=True)
class AudioConfig:
    """Where live audio comes from and goes to; files use their own audio track."""

    mic: str | None = None  # input device index or name, None = the system default
    audio_out: str | None = None  # play the microphone, delayed to match the video, on this output device
    lookahead: str = DEFAULT_LOOKAHEAD  # one of LOOKAHEADS

    def __post_init__(self) -> None:
        if self.lookahead not in LOOKAHEADS:
            raise UsageError(f"unknown lookahead {self.lookahead!r}; choose one of: {', '.join(LOOKAHEADS)}")


@dataclass(frozen=True)
class RunConfig:
    """Everything one run needs; built by the CLI, checked here once."""

    source: SourceConfig
    output: OutputConfig
    engine: str = DEFAULT_ENGINE
    weights: Path | None = None  # the neural engine's checkpoint (.pth) or exported model (.onnx)
    backend: str = DEFAULT_BACKEND  # the neural engine's inference backend
    controls: Controls = Controls()
    schedule: Schedule | None = None  # controls from each frame's time (keyframes, the tour) instead of `controls`
    audio: AudioConfig = AudioConfig()
    bench: bool = False  # discard the output and never pace: measure the pipeline itself

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise UsageError(f"unknown engine {self.engine!r}; choose one of: {', '.join(ENGINES)}")
        if self.weights is not None and not self.weights.is_file():
            raise UsageError(f"weights file not found: {self.weights}")
        if self.backend not in BACKENDS:
            raise UsageError(f"unknown backend {self.backend!r}; choose one of: {', '.join(BACKENDS)}")
        if self.engine == "neural" and self.weights is None:
            raise UsageError("the neural engine needs --weights (a Wav2Lip-format checkpoint or an exported .onnx)")
        check_size_fps(self.source.size, self.source.fps)
        self._check_output_is_not_the_source()
        # Keyframes are times in a recording; the tour (a looping schedule) is a showcase, on a camera too.
        if self.schedule is not None and self.schedule.loop_s is None and self.source.live:
            raise UsageError("keyframes are for recorded video (a file, or --source demo): a camera or stream is "
                             "steered live with the hotkeys")
        if self.audio.audio_out is not None and not self.source.live:
            raise UsageError("--audio-out plays the microphone delayed to match the video: it needs a camera source")

    def _check_output_is_not_the_source(self) -> None:
        """Refuse to write over the recording being read: the same path, a link to it, or a hard link (one inode)."""
        output = self.output.file
        if output is None or self.source.kind is not SourceKind.FILE or not output.exists():
            return
        source = Path(self.source.location)
        try:
            same = os.path.samefile(source, output)
        except OSError:
            return
        if same:
            also = "" if output == source else f" (the same file as {source})"
            raise UsageError(f"the output {output} is the source file itself{also}: writing it would destroy the "
                             "recording; choose another output name")
