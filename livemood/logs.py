"""What livemood says on stderr: faults told once with their recovery, and native libraries' chatter kept out.

`Episode` is a condition that comes and goes (a device failing, the face out of view): its start is logged once,
its end once, and a condition that flaps is not told again within `quiet_s`. `quiet_native_stderr` filters what
native code (mediapipe's absl logging, TensorFlow Lite, PortAudio) writes straight to file descriptor 2, which no
Python logging setting reaches.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import sys
import threading

from livemood.frames import now

QUIET_S = 10.0  # s after an episode was told during which a new one of the same kind is only counted

# Routine lines native libraries write to fd 2. Real errors do not match and pass: absl's E and F lines,
# TensorFlow Lite's "ERROR:", anything else.
NATIVE_NOISE = re.compile(
    rb"[IW]\d{4} [\d:.]+ +\d+ [\w.-]+:\d+\] "  # absl INFO and WARNING lines (mediapipe's graphs)
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|INFO: "  # TensorFlow Lite's informational lines ("Created TensorFlow Lite XNNPACK delegate for CPU.")
    rb"|Expression '.*' failed in 'src/hostapi/"  # PortAudio's internal checks: livemood reports the device itself
    rb"|ALSA lib "  # alsa-lib on a lost device (PulseAudio's plugin: "Unable to create stream"), reported likewise
)
DRAIN_TIMEOUT_S = 1.0  # at exit, how long the filter may take to pass on what native code wrote last


class Episode:
    """A condition that starts and ends, logged once each way; at most one start is told per `quiet_s`.

    An end is told only when its start was, with the episode's duration, so the log always reads in pairs.
    """

    def __init__(self, logger: logging.Logger, quiet_s: float = QUIET_S) -> None:
        self._log = logger
        self.quiet_s = quiet_s
        self.since: float | None = None  # pipeline-clock time the current episode started; None when not in one
        self.count = 0  # episodes so far, told or not
        self._told = False
        self._last_told = -float("inf")

    @property
    def active(self) -> bool:
        return self.since is not None

    def start(self, msg: str, *args: object, level: int = logging.WARNING, at: float | None = None) -> bool:
        """Enter the episode (no-op while in it); logs `msg % args` unless one was told under `quiet_s` ago.
        `at` is the time in s (default: now; a file's own timeline works too). Returns whether this call started
        it."""
        if self.since is not None:
            return False
        t = now() if at is None else at
        self.since = t
        self.count += 1
        self._told = t - self._last_told >= self.quiet_s
        if self._told:
            self._last_told = t
            self._log.log(level, msg, *args)
        return True

    def end(self, msg: str, *args: object, level: int = logging.INFO, at: float | None = None) -> bool:
        """Leave the episode (no-op when not in one); logs `msg % args` and "after N s" if its start was told.
        Returns whether this call ended it."""
        if self.since is None:
            return False
        if self._told:
            self._log.log(level, f"{msg} after %.1f s", *args, (now() if at is None else at) - self.since)
        self.since = None
        return True


def first_line(e: BaseException) -> str:
    """An exception's message cut to its first line for a one-line report; its type's name when it has none."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


_filter: threading.Thread | None = None


def quiet_native_stderr() -> None:
    """Pass what native code writes to fd 2 through a filter that drops `NATIVE_NOISE` lines; Python's own stderr
    (logging, tracebacks) is moved to a copy of the real stderr, so it never waits on the filter.

    Only for a process that owns its stderr (the command line, tools): when `sys.stderr` has been replaced (a test
    capturing output) nothing changes. Safe to call twice. At exit the filter is drained and fd 2 restored.
    """
    global _filter
    if _filter is not None or sys.stderr is not sys.__stderr__:
        return
    try:
        if sys.stderr.fileno() != 2:
            return
    except (AttributeError, OSError, ValueError):  # no real stderr (a GUI launcher)
        return
    sys.stderr.flush()
    real = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)  # native code and child processes now write into the filter
    os.close(write_end)
    sys.stderr = open(real, "w", buffering=1, encoding=sys.__stderr__.encoding, errors="backslashreplace",  # noqa: SIM115 - lives as long as the process
                      closefd=False)
    _filter = threading.Thread(target=_pass_on, args=(read_end, real), name="native-stderr", daemon=True)
    _filter.start()
    atexit.register(_restore, real)


def _pass_on(read_end: int, real: int) -> None:
    with open(read_end, "rb") as pipe:
        for line in pipe:
            if not NATIVE_NOISE.match(line):
                os.write(real, line)


def _restore(real: int) -> None:
    """Put the real stderr back on fd 2, which closes the pipe's last writer here, and let the filter drain."""
    os.dup2(real, 2)
    if _filter is not None:
        _filter.join(DRAIN_TIMEOUT_S)
