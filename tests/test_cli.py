"""The command line as a user meets it: bad input is one line and exit status 2, the demo and bench run."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from livemood.cli import main

from .conftest import read_frames


def bad_inputs(media: Path, tmp: Path) -> dict[str, tuple[list[str], str]]:
    out = str(tmp / "out" / "x.mp4")  # tmp/out exists (see below), so only the named problem fails
    return {
        "missing file": (["--source", str(tmp / "nope.mp4"), "--output", out], "not found"),
        "unreadable file": (["--source", str(tmp / "notes.txt"), "--output", out], "cannot read"),
        "no video stream": (["--source", str(media / "speech_en_16k.wav"), "--output", out], "no video stream"),
        "camera that does not open": (["--source", "57", "--output", out], "camera 57"),
        "unknown emotion": (["--source", "demo", "--emotion", "joyful", "--output", out], "unknown emotion"),
        "intensity above 1": (["--source", "demo", "--intensity", "1.5", "--output", out], "between 0 and 1"),
        "intensity below 0": (["--source", "demo", "--intensity", "-0.1", "--output", out], "between 0 and 1"),
        "intensity not a number": (["--source", "demo", "--intensity", "lots", "--output", out], "--intensity"),
        "output folder missing": (["--source", "demo", "--output", str(tmp / "nodir" / "x.mp4")], "does not exist"),
        "unknown engine": (["--source", "demo", "--engine", "magic", "--output", out], "unknown engine"),
        "width without height": (["--source", "demo", "--width", "640", "--output", out], "--height"),
    }


CASES = list(bad_inputs(Path("."), Path(".")))


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    case: str, media: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "notes.txt").write_text("not a video")
    argv, expected = bad_inputs(media, tmp_path)[case]
    code = _exit_code(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("livemood: error:") and expected in err[0], err
    assert list((tmp_path / "out").iterdir()) == [], "nothing partially written"


def _exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse's own errors
        return int(e.code or 0)


def test_demo_writes_a_moving_portrait(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "demo.mp4"
    with caplog.at_level("INFO"):
        assert main(["--source", "demo", "--output", str(out)]) == 0
    assert any(str(out) in r.message for r in caplog.records), "says where the result is"
    frames = read_frames(out)
    assert len(frames) == 300 and frames[0].shape == (512, 512, 3)  # 12 s at 25 fps
    # The head sways and the mouth moves: consecutive frames differ, but never by much.
    steps = [np.abs(a.astype(int) - b).mean() for a, b in itertools.pairwise(frames)]
    assert min(steps) > 0.05 and max(steps) < 20


def test_bench_prints_one_json_line(media: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "livemood", "bench", "--source", str(media / "talk_b.mp4"),
         "--width", "640", "--height", "360", "--json"],
        capture_output=True, text=True, check=True, timeout=120,
    )
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 1
    report = json.loads(lines[0])
    assert report["frames"] == 125 and report["dropped"] == 0
    assert set(report["latency_ms"]) == {"p50", "p95", "max"}
    assert {"decode", "engine", "output"} <= set(report["stages_ms"])
    assert report["latency_ms"]["p50"] <= report["latency_ms"]["p95"] <= report["latency_ms"]["max"]


def test_devices_says_why_there_is_no_virtual_camera(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    assert "cameras:" in out and "microphones (--mic):" in out and "audio outputs (--audio-out):" in out
    assert "virtual camera:" in out and ("usable" in out or "To get one" in out)


def test_control_panel_drives_a_real_run(tmp_path: Path) -> None:
    """`--control`: the run prints the panel's address, its API shows the pipeline and changes the emotion through
    the same path (and the same log line) as a hotkey; the server goes with the run."""
    import http.client
    import re

    cmd = [sys.executable, "-m", "livemood", "--source", "demo", "--output", str(tmp_path / "out.mp4"),
           "--control", "127.0.0.1:0", "--control-token", "secret-token"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            match = re.search(r"control panel: http://127\.0\.0\.1:(\d+)/\?token=secret-token", line)
            if match:
                break
        else:
            raise AssertionError("no panel line")
        port = int(match.group(1))

        def call(method: str, body: dict | None = None) -> dict:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request(method, "/api/state", body=None if body is None else json.dumps(body),
                         headers={"Authorization": "Bearer secret-token", "Content-Type": "application/json"})
            reply = conn.getresponse()
            assert reply.status == 200
            return json.loads(reply.read())

        assert call("GET")["engine"] == "warp"
        assert call("POST", {"emotion": "sad", "intensity": 0.7})["emotion"] == "sad"
        rest = proc.stderr.read()
        assert proc.wait(timeout=120) == 0
    finally:
        proc.kill()
    assert "emotion sad, intensity 0.7" in rest, "logged like a hotkey"
    assert (tmp_path / "out.mp4").is_file()
