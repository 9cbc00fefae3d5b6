"""What reaches stderr: native libraries' chatter filtered at fd 2 (really run), episodes told once with recovery."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest

from livemood.logs import Episode

ABSL_WARNING = "W0000 00:00:1796218055.411529   22244 inference_feedback_manager.cc:114] Feedback manager requires"


def short_clip(source: Path, out: Path, frames: int) -> Path:
    """The first `frames` frames of `source` with their audio: a real file run that lasts a second or two."""
    with av.open(str(source)) as src, av.open(str(out), "w") as dst:
        video = dst.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 256, 256, "yuv420p"
        for i, frame in enumerate(src.decode(video=0)):
            if i == frames:
                break
            small = frame.reformat(256, 256, "yuv420p")
            small.pts = None
            dst.mux(video.encode(small))
        dst.mux(video.encode(None))
    return out


def test_a_file_run_says_only_livemood_lines_unless_verbose(media: Path, tmp_path: Path) -> None:
    clip = short_clip(media / "talk_a.mp4", tmp_path / "clip.mp4", 25)

    def run(*extra: str) -> list[str]:
        cmd = [sys.executable, "-m", "livemood", "--source", str(clip), "--engine", "identity",
               "--output", str(tmp_path / "out.mp4"), *extra]
        done = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stderr.splitlines()

    quiet = run()
    assert quiet[-2:] == [f"wrote {tmp_path / 'out.mp4'} (25 frames)", quiet[-1]], quiet
    assert quiet[-1].startswith("25 frames in ")
    assert len(quiet) <= 3, f"only livemood's own lines: {quiet}"  # at most one more, e.g. the neutral face's
    verbose = run("-v")
    # The same run with -v shows mediapipe's native lines: they were filtered, not absent.
    assert any(line.startswith("INFO: Created TensorFlow Lite") for line in verbose)
    assert any(line.startswith("global hotkeys off") for line in verbose)


def test_native_errors_and_python_lines_pass_the_filter() -> None:
    # Writes to fd 2 as native code does (os.write bypasses Python's sys.stderr), then a Python log line.
    script = f"""
import logging, os
from livemood.logs import quiet_native_stderr
quiet_native_stderr()
logging.basicConfig(format="%(message)s")
os.write(2, b"{ABSL_WARNING}\\n")
os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n")
os.write(2, b"E0000 00:00:1796218055.411529   22244 graph.cc:10] a real native error\\n")
logging.warning("livemood's own line")
os.write(2, b"ERROR: a TensorFlow Lite error\\n")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert sorted(done.stderr.splitlines()) == sorted([
        "E0000 00:00:1796218055.411529   22244 graph.cc:10] a real native error",
        "livemood's own line",
        "ERROR: a TensorFlow Lite error",
    ])


def test_an_episode_is_told_once_each_way_and_flapping_is_not_retold(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("livemood.test")
    episode = Episode(log, quiet_s=0.3)
    with caplog.at_level(logging.INFO, logger="livemood.test"):
        assert episode.start("camera lost")
        assert not episode.start("camera lost")  # already in it
        assert episode.end("camera back")
        assert not episode.end("camera back")
        for _ in range(5):  # flapping within quiet_s: counted, not told
            episode.start("camera lost")
            episode.end("camera back")
        time.sleep(0.35)
        episode.start("camera lost")
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "camera lost" and lines[1].startswith("camera back after ") and lines[1].endswith(" s")
    assert lines[2:] == ["camera lost"]
    assert episode.count == 7 and episode.active
