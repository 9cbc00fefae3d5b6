"""A private PulseAudio server with null sinks: a real microphone path on a machine without a sound card.

Used by the microphone tests and `tools/soak.py`. Speech played with `paplay --device=livemood_mic` into the first
null sink is what a PortAudio "pulse" device with PULSE_SOURCE=livemood_mic.monitor records.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MIC_SINK, OUT_SINK = "livemood_mic", "livemood_out"
NULL_SINKS = {MIC_SINK: 48000, OUT_SINK: 44100}  # name: rate in Hz (two rates: both resampling paths run)
START_TIMEOUT_S = 10.0


def missing_tools() -> list[str]:
    return [tool for tool in ("pulseaudio", "pactl", "paplay") if shutil.which(tool) is None]


@contextmanager
def private_pulseaudio(root: Path) -> Iterator[str]:
    """Run a PulseAudio server (works as root, without a session bus or stdin) with `NULL_SINKS`, its state under
    `root`, and make it this process's PULSE_SERVER (its address is yielded); PortAudio is rescanned to see it.
    Raises RuntimeError with the server's log if it does not start. The caller restores PULSE_SERVER."""
    socket = root / "native"
    env = dict(os.environ, HOME=str(root), PULSE_RUNTIME_PATH=str(root / "run"), PULSE_STATE_PATH=str(root / "state"))
    command = [
        "pulseaudio",
        "--daemonize=no",
        "-n",  # no default.pa: no hardware detection, no idle suspension
        "--exit-idle-time=-1",
        "--disallow-exit",
        f"--load=module-native-protocol-unix auth-anonymous=1 socket={socket}",
        *(f"--load=module-null-sink sink_name={name} rate={rate}" for name, rate in NULL_SINKS.items()),
    ]
    log_path = root / "pulseaudio.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    address = f"unix:{socket}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while subprocess.run(["pactl", "--server", address, "info"], capture_output=True).returncode != 0:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pulseaudio did not start: {log_path.read_text(errors='replace')[-2000:]}")
            time.sleep(0.1)
        # Whatever imported sounddevice first (mediapipe does) made PortAudio list devices before this server
        # existed: rescan so its "pulse" device is found (PULSE_SERVER must name it by then).
        os.environ["PULSE_SERVER"] = address
        import sounddevice as sd

        sd._terminate()
        sd._initialize()
        yield address
    finally:
        server.terminate()
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.kill()
