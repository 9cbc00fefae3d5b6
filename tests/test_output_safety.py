"""The output side under stress, as a user's script meets it: a full or read-only disk, a signal mid-run, two runs
writing one file, containers other than MP4. Real subprocesses, real signals, real file-size limits; every failure
is one line with its exit status, leaves no temporary file, and keeps a file already at the output path as it was.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from livemood.atomic import TEMP_MARK
from livemood.config import EXIT_FAILED, EXIT_SIGNAL_BASE, EXIT_USAGE, OutputConfig, RunConfig, SourceConfig
from livemood.live.pipeline import assemble
from livemood.live.sinks import FileSink
from livemood.live.stats import StageTimes

from .conftest import read_frames

OLD_BYTES = b"the user's previous render, which a failed run must not touch\n"
CLIP_FRAMES = 25  # the short clip: 1 s at 25 fps
CLIP_SIZE = 160  # px, square
START_TIMEOUT_S = 120.0  # a loaded 2-core box imports torch, PyAV and OpenCV before the first frame
WRITING_BYTES = 4096  # a temporary file this big holds frames: the frame loop is running


@pytest.fixture(scope="module")
def clip(media: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """talk_b's first second, small, with its own AAC audio copied: quick to render."""
    out = tmp_path_factory.mktemp("clip") / "short.mp4"
    with av.open(str(media / "talk_b.mp4")) as src, av.open(str(out), "w") as dst:
        video_in, audio_in = src.streams.video[0], src.streams.audio[0]
        video = dst.add_stream("libx264", rate=25)
        video.width = video.height = CLIP_SIZE
        video.pix_fmt = "yuv420p"
        audio = dst.add_stream_from_template(audio_in)
        encoded = 0
        for packet in src.demux(video_in, audio_in):
            if packet.dts is None:
                continue
            if packet.stream is audio_in:
                if packet.pts * packet.time_base < CLIP_FRAMES / 25:
                    packet.stream = audio
                    dst.mux(packet)
                continue
            for frame in packet.decode():
                if encoded < CLIP_FRAMES:
                    small = frame.reformat(CLIP_SIZE, CLIP_SIZE, "yuv420p")
                    small.pts, small.time_base = encoded, Fraction(1, 25)
                    dst.mux(video.encode(small))
                    encoded += 1
        dst.mux(video.encode(None))
    return out


def livemood_command(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "livemood", *map(str, args)]


def limit_file_size(max_bytes: int) -> Callable[[], None]:
    """A preexec_fn: files this process writes stop at `max_bytes`. SIGXFSZ is ignored, so a write past the limit
    fails with EFBIG (what the product must report) instead of killing the process."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    return apply


def one_error_line(stderr: str, *expected: str) -> str:
    """The single `livemood: error:` line, after checking there is no traceback."""
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("livemood: error:")]
    assert len(errors) == 1, stderr[-3000:]
    assert all(text in errors[0] for text in expected), errors[0]
    return errors[0]


def assert_untouched(folder: Path, before: dict[str, bytes]) -> None:
    """The folder holds what it held before the run, byte for byte: no output, no temporary file."""
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def with_old_file(folder: Path, name: str) -> dict[str, bytes]:
    folder.mkdir(exist_ok=True)
    (folder / name).write_bytes(OLD_BYTES)
    return {name: OLD_BYTES}


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if TEMP_MARK in p.name]


# --- a full disk ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_size(clip: Path, tmp_path_factory: pytest.TempPathFactory) -> int:
    """Bytes of the clip's render as a file run writes it (x264 and the MP4 muxer are deterministic)."""
    out = tmp_path_factory.mktemp("reference") / "out.mp4"
    subprocess.run(livemood_command("--source", clip, "--engine", "passthrough", "--output", out),
                   capture_output=True, check=True, timeout=300)
    return out.stat().st_size


@pytest.mark.parametrize("where", ["mid-run", "finishing"])
def test_full_disk_is_one_line_and_keeps_the_old_file(where: str, clip: Path, finished_size: int,
                                                       tmp_path: Path) -> None:
    """Mid-run: a frame's write fails. Finishing: the MP4 index, written last by `close`, does not fit."""
    before = with_old_file(tmp_path / "out", "out.mp4")
    limit = finished_size // 3 if where == "mid-run" else finished_size - 64
    run = subprocess.run(livemood_command("--source", clip, "--engine", "passthrough", "--output",
                                          tmp_path / "out" / "out.mp4"),
                         capture_output=True, text=True, timeout=300, preexec_fn=limit_file_size(limit))
    assert run.returncode == EXIT_FAILED
    one_error_line(run.stderr, "out.mp4", os.strerror(27))  # EFBIG: "File too large"
    assert_untouched(tmp_path / "out", before)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A slim generator checkpoint (~36 MB; its ONNX is about half that)."""
    from livemood.models.checkpoint import save_checkpoint
    from livemood.models.wav2lip import SLIM_WIDTH, EmotionWav2Lip

    path = tmp_path_factory.mktemp("weights") / "slim.pth"
    save_checkpoint(path, EmotionWav2Lip(SLIM_WIDTH))
    return path


def test_full_disk_during_export_is_one_line(weights: Path, tmp_path: Path) -> None:
    before = with_old_file(tmp_path / "out", "m.onnx")
    run = subprocess.run(livemood_command("export", "--weights", weights, "--out", tmp_path / "out" / "m.onnx"),
                         capture_output=True, text=True, timeout=300, preexec_fn=limit_file_size(1 << 20))
    assert run.returncode == EXIT_FAILED
    one_error_line(run.stderr, "m.onnx", os.strerror(27))
    assert_untouched(tmp_path / "out", before)


def test_full_disk_while_saving_a_checkpoint_raises_one_line(tmp_path: Path) -> None:
    """torch's own writer would say `unexpected pos 704 vs 598`; the checkpoint says which file and why."""
    before = with_old_file(tmp_path / "out", "step.pth")
    script = ("import sys, torch\nfrom pathlib import Path\nfrom livemood.config import RunError\n"
              "from livemood.models.checkpoint import save_checkpoint\n"
              "try:\n    save_checkpoint(Path(sys.argv[1]), torch.nn.Linear(1000, 1000))\n"
              "except RunError as e:\n    print(e)\n")
    run = subprocess.run([sys.executable, "-c", script, str(tmp_path / "out" / "step.pth")], capture_output=True,
                         text=True, timeout=300, preexec_fn=limit_file_size(1 << 20))
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == f"cannot write {tmp_path / 'out' / 'step.pth'}: {os.strerror(27)}"
    assert_untouched(tmp_path / "out", before)


# --- a read-only file system ---------------------------------------------------------------------------------


def read_only_prefix(folder: Path) -> list[str]:
    """A command prefix under which `folder` is read-only for real.

    Not root: chmod does it. Root writes through any mode bits, so the folder is bind-mounted read-only in a
    private mount namespace of the child alone (`unshare`); where that is not allowed the test is skipped.
    """
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return []
    prefix = ["unshare", "--map-root-user", "--mount", "sh", "-c",
              'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" "$0" && exec "$@"', str(folder)]
    try:
        probe = subprocess.run([*prefix, "sh", "-c", '! touch "$0/probe" 2>/dev/null', str(folder)],
                               capture_output=True, timeout=30)
    except FileNotFoundError:
        probe = None
    if probe is None or probe.returncode != 0:
        pytest.skip("running as root, where chmod does not stop writes, and no private mount namespace "
                    "(unshare --map-root-user --mount) is available for a read-only bind mount")
    assert not (folder / "probe").exists()
    return prefix


@pytest.mark.parametrize("command", ["run", "export"])
def test_read_only_output_folder_is_one_line(command: str, clip: Path, weights: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    if command == "run":
        before = with_old_file(out, "out.mp4")
        args = livemood_command("--source", clip, "--engine", "passthrough", "--output", out / "out.mp4")
    else:
        before = with_old_file(out, "m.onnx")
        args = livemood_command("export", "--weights", weights, "--out", out / "m.onnx")
    try:
        run = subprocess.run([*read_only_prefix(out), *args], capture_output=True, text=True, timeout=300)
    finally:
        out.chmod(0o755)
    assert run.returncode == EXIT_FAILED
    one_error_line(run.stderr, str(out), os.strerror(30) if os.geteuid() == 0 else os.strerror(13))
    assert_untouched(out, before)


# --- signals -------------------------------------------------------------------------------------------------


def start_writing(media: Path, out: Path) -> subprocess.Popen[str]:
    """A file run into `out`/out.mp4 that has started writing its temporary file (so a signal now cuts it short)."""
    # SIG_DFL: a shell's background job inherits SIGINT ignored, which the product rightly keeps ignoring.
    proc = subprocess.Popen(livemood_command("--source", media / "talk_e.mp4", "--engine", "passthrough",
                                             "--output", out / "out.mp4"),
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + START_TIMEOUT_S
    while not any(p.stat().st_size > WRITING_BYTES for p in temp_files(out)):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("the run ended, or never started writing, before it could be interrupted")
        time.sleep(0.02)
    return proc


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_signal_mid_run_stops_cleanly_with_128_plus_its_number(signum: signal.Signals, media: Path,
                                                                tmp_path: Path) -> None:
    out = tmp_path / "out"
    before = with_old_file(out, "out.mp4")
    proc = start_writing(media, out)
    try:
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == EXIT_SIGNAL_BASE + signum
    assert "Traceback" not in stderr and "no output file was written" in stderr, stderr[-3000:]
    assert_untouched(out, before)


def test_a_repeated_signal_does_not_cut_the_clean_up_short(media: Path, tmp_path: Path) -> None:
    """Ctrl-C pressed again and again while the run stops: the first one counts, the clean-up finishes."""
    out = tmp_path / "out"
    before = with_old_file(out, "out.mp4")
    proc = start_writing(media, out)
    try:
        proc.send_signal(signal.SIGTERM)
        # Python runs pending handlers lowest number first: SIGINT sent along with SIGTERM would be the first.
        assert proc.stderr is not None
        stderr = ""
        while "interrupted" not in stderr:
            line = proc.stderr.readline()
            assert line, stderr[-3000:]
            stderr += line
        while proc.poll() is None:  # the clean-up under a hail of Ctrl-C
            proc.send_signal(signal.SIGINT)
            time.sleep(0.002)
        stderr += proc.stderr.read()
    finally:
        proc.kill()
    assert proc.returncode == EXIT_SIGNAL_BASE + signal.SIGTERM
    assert "Traceback" not in stderr, stderr[-3000:]
    assert_untouched(out, before)


# --- two writers, containers ---------------------------------------------------------------------------------


def test_two_runs_writing_one_output_at_once_do_not_share_a_file(clip: Path, tmp_path: Path) -> None:
    """Each writer has its own hidden temporary file in the output's folder; the last to finish wins whole."""
    out = tmp_path / "out.mp4"
    frames = read_frames(clip)
    sinks = [FileSink(out, (CLIP_SIZE, CLIP_SIZE), 25.0, clip) for _ in range(2)]
    names = [p.name for p in temp_files(tmp_path)]
    assert len(names) == 2 and all(name.startswith(".out.") and name.endswith(".mp4") for name in names)
    for i, frame in enumerate(frames):
        for k, sink in enumerate(sinks):
            sink.send(frame if k == 0 else 255 - frame, i / 25)  # two different videos, written interleaved
    for k, sink in enumerate(sinks):
        sink.close()
        result = read_frames(out)
        want = frames if k == 0 else [255 - f for f in frames]
        assert len(result) == len(frames), f"writer {k}'s video, whole"
        assert np.abs(result[0].astype(int) - want[0]).mean() < 8, f"writer {k}'s video, not a mix"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def render(clip: Path, out: Path) -> None:
    config = RunConfig(SourceConfig.parse(str(clip)), OutputConfig(out), engine="passthrough")
    result = assemble(config, StageTimes()).run()
    assert not result.interrupted


@pytest.mark.parametrize(("suffix", "video", "audio"), [
    (".webm", "vp9", "opus"),  # WebM takes VP8/VP9/AV1 and Vorbis/Opus: the source's AAC is encoded again
    (".gif", "gif", None),  # no sound in a GIF
    (".avi", "h264", "aac"),
    (".mkv", "h264", "aac"),
])
def test_each_container_gets_codecs_it_takes(suffix: str, video: str, audio: str | None, clip: Path,
                                             tmp_path: Path) -> None:
    out = tmp_path / f"out{suffix}"
    render(clip, out)
    with av.open(str(out)) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name == video
        assert [s.codec_context.name for s in c.streams.audio] == ([audio] if audio else [])
        # AVI's header has one frame rate and a frame count (they read 600 fps and 3000 frames).
        if suffix == ".avi":
            assert stream.average_rate == 25 and stream.frames == CLIP_FRAMES
        times = [float(f.time) for f in c.decode(stream)]
    assert len(times) == CLIP_FRAMES
    assert np.allclose(np.diff(times), 1 / 25, atol=0.011)  # GIF stores centiseconds
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]


@pytest.mark.parametrize(("suffix", "expected"), [
    (".png", "takes no video"),  # an image sequence muxer
    (".wav", "takes no video"),
    (".xyz", "no video format has the extension .xyz"),
])
def test_a_container_without_video_is_one_line_exit_2(suffix: str, expected: str, clip: Path,
                                                      tmp_path: Path) -> None:
    run = subprocess.run(livemood_command("--source", clip, "--engine", "passthrough", "--output",
                                          tmp_path / f"out{suffix}"), capture_output=True, text=True, timeout=300)
    assert run.returncode == EXIT_USAGE
    one_error_line(run.stderr, expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_help_lists_the_exit_statuses() -> None:
    run = subprocess.run(livemood_command("--help"), capture_output=True, text=True, check=True, timeout=120)
    text = run.stdout[run.stdout.index("exit status:"):]
    for status in ("0", "1", "2", "3", "128+N", "SIGHUP 129", "SIGINT 130", "SIGTERM 143"):
        assert status in text, text
