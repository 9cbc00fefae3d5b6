"""Keyboard control of the live filter: one key map, read from the terminal, the preview window or global hotkeys.

Every input path turns what it reads into a one-character key and hands it to `apply_key`, which changes the shared
`ControlState` (each change is logged there on one line). Quitting is not done here: the caller passes `on_quit`
(typically `threading.Event.set`) and its loop polls the event.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

from livemood.config import EMOTIONS, MAX_EXPRESSIVENESS
from livemood.controls import ControlState
from livemood.logs import first_line

log = logging.getLogger(__name__)

# Key i (1-based) picks EMOTIONS[i - 1]; with more than 9 emotions the extra ones would have no key.
EMOTION_BY_KEY: dict[str, str] = {str(i): name for i, name in enumerate(EMOTIONS[:9], start=1)}
UP_KEYS = ("+", "=")  # '=' is the '+' key without Shift on US layouts
DOWN_KEYS = ("-", "_")  # '_' is '-' with Shift held, so a held Shift does not matter
BYPASS_KEYS = ("0", " ")
MORE_KEYS = ("]", "}")  # expressiveness up ('}' is ']' with Shift)
LESS_KEYS = ("[", "{")  # expressiveness down
NEUTRAL_KEYS = ("n", "N")  # "this is my neutral face": the expressiveness estimate retakes it now
ESC = "\x1b"
CTRL_C = "\x03"  # arrives as a character only where it is not turned into SIGINT (Windows console, OpenCV window)
QUIT_KEYS = ("q", ESC, CTRL_C)
ALL_KEYS = frozenset((*EMOTION_BY_KEY, *UP_KEYS, *DOWN_KEYS, *BYPASS_KEYS, *QUIT_KEYS, *MORE_KEYS, *LESS_KEYS,
                      *NEUTRAL_KEYS))

INTENSITY_STEPS = 10  # intensity (and expressiveness) move in steps of 1/10, kept on that grid: presses never drift
GRID_TOLERANCE = 1e-6  # in tenths: a value this close to a tenth counts as on it
READ_BYTES = 64  # one read of the terminal: a burst of typed keys or one escape sequence
# The readers wake this often (seconds) to see whether to stop: close() then needs no extra file descriptors, works
# from any thread (on_quit may call it from the reader itself) and the Windows console, which cannot be waited on
# with select, is read the same way. It delays only the end of close(), never a key on POSIX.
POLL_S = 0.05
JOIN_TIMEOUT_S = 1.0  # the reader threads are daemons: never let closing hang on one

# Global hotkeys are Ctrl + left Alt + a key, so ordinary typing in the call is left alone. Left Alt only: AltGr, which
# types characters such as '@' and '{' on many layouts, is the right Alt (Windows even reports it as Ctrl+right Alt).
# The key is recognised by what each platform reports unchanged while Ctrl and Alt are held:
# X11: the character ('=' and '+' both step up, since '+' is unshifted on some layouts).
GLOBAL_CHARS: dict[str, str] = {
    **{key: key for key in (*EMOTION_BY_KEY, "0", "q", "-", "+", "[", "]", "n")},
    "=": "+",
    "_": "-",
    "{": "[",
    "}": "]",
}
# Windows: the virtual-key code of the physical key (VK_0..VK_9, VK_Q, VK_OEM_PLUS, VK_OEM_MINUS, VK_OEM_4 and
# VK_OEM_6 for the brackets, VK_N).
WINDOWS_VKS: dict[int, str] = {
    **{0x30 + i: str(i) for i in range(10) if str(i) in ALL_KEYS},
    0x51: "q",
    0xBB: "+",
    0xBD: "-",
    0xDB: "[",
    0xDD: "]",
    0x4E: "n",
}
# macOS: the ANSI key code (kVK_ANSI_*), since Option changes the character ('¡' for Option+1).
MAC_VKS: dict[int, str] = {
    vk: key
    for vk, key in {
        0x12: "1", 0x13: "2", 0x14: "3", 0x15: "4", 0x17: "5", 0x16: "6", 0x1A: "7", 0x1C: "8", 0x19: "9",
        0x1D: "0", 0x0C: "q", 0x18: "+", 0x1B: "-", 0x21: "[", 0x1E: "]", 0x2D: "n",
    }.items()
    if key in ALL_KEYS
}
GLOBAL_HELP = ("Ctrl+left Alt with 1..{n} emotion, = or - intensity, [ or ] expressiveness, N neutral face, "
               "0 bypass, Q quit")

def describe_keys() -> str:
    """One line telling the user which keys do what."""
    emotions = ", ".join(f"{key} {name}" for key, name in EMOTION_BY_KEY.items())
    return (f"keys: {emotions}; +/- intensity; [/] expressiveness; n neutral face now; 0 or space bypass; "
            "q or Esc quit")


def _step_tenth(value: float, up: bool, top: float = 1.0) -> float:
    """The next tenth above (or below) `value`, clamped to [0, top].

    Counting in integer tenths keeps repeated presses on exact values (0.3, not 0.30000000000000004); an
    off-grid start such as 0.55 moves to 0.6 or 0.5. The tolerance absorbs float error in `intensity * 10`.
    """
    tenths = value * INTENSITY_STEPS
    target = math.floor(tenths + GRID_TOLERANCE) + 1 if up else math.ceil(tenths - GRID_TOLERANCE) - 1
    return min(round(top * INTENSITY_STEPS), max(0, target)) / INTENSITY_STEPS


def apply_key(state: ControlState, key: str) -> bool:
    """Apply one key press to `state`; returns True when the key asks to quit (the state is then unchanged).

    Keys without an action are ignored. Each change goes through `ControlState.update`, which logs the new state;
    a press that changes nothing (e.g. '+' at full intensity) is still logged, so the user sees it was received.
    """
    if key in QUIT_KEYS:
        return True
    if key in EMOTION_BY_KEY:
        state.update(emotion=EMOTION_BY_KEY[key])
    elif key in UP_KEYS or key in DOWN_KEYS:
        state.apply(lambda c: {"intensity": _step_tenth(c.intensity, up=key in UP_KEYS)})
    elif key in MORE_KEYS or key in LESS_KEYS:
        state.apply(lambda c: {"expressiveness": _step_tenth(c.expressiveness, key in MORE_KEYS, MAX_EXPRESSIVENESS)})
    elif key in NEUTRAL_KEYS:
        state.apply(lambda c: {"neutral_takes": c.neutral_takes + 1})
    elif key in BYPASS_KEYS:
        state.apply(lambda c: {"bypass": not c.bypass})
    else:
        log.debug("key %r has no action", key)
    return False


class WindowKeys:
    """Keys pressed in the preview window: give it as `PreviewSink(on_key=...)`; it calls this with each
    `cv2.waitKey` code."""

    def __init__(self, state: ControlState, on_quit: Callable[[], None]) -> None:
        self._state = state
        self._on_quit = on_quit

    def __call__(self, code: int) -> None:
        key = key_from_waitkey(code)
        if key is not None and apply_key(self._state, key):
            self._on_quit()


def key_from_waitkey(code: int) -> str | None:
    """The key for a `cv2.waitKey` result (-1 when none was pressed), or None when it has no action.

    Only the low byte is used: some OpenCV builds set modifier flags in the high bits. Arrow keys masked this way
    read as 'Q'..'T' on GTK, which is why keys are matched case-sensitively.
    """
    if code < 0:
        return None
    key = chr(code & 0xFF)
    return key if key in ALL_KEYS else None


def _split_keys(text: str) -> list[str]:
    """The keys in what one terminal read returned, with escape sequences (arrows, F-keys, Alt+key) left out.

    A terminal writes an escape sequence in one go, so a read holds it whole; only an ESC that ends a read is the
    Esc key itself. Without this, an arrow key would read as Esc and quit.
    """
    keys: list[str] = []
    i = 0
    while i < len(text):
        if text[i] != ESC or i + 1 == len(text):
            keys.append(text[i])
            i += 1
        elif text[i + 1] == "[":  # CSI: parameters, then one final byte in '@'..'~'
            i += 2
            while i < len(text) and not "@" <= text[i] <= "~":
                i += 1
            i += 1
        elif text[i + 1] == "O":  # SS3: one more byte (F1..F4, arrows in application mode)
            i += 3
        else:  # Alt+key
            i += 2
    return keys


def _fileno(stream: TextIO | int | None) -> int | None:
    """The file descriptor behind `stream`, or None when it has none (closed, replaced by a test harness, pythonw)."""
    if stream is None or isinstance(stream, int):
        return stream
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both an OSError and a ValueError
        return None


class TerminalKeys:
    """Reads single key presses from a terminal on a daemon thread and applies them with `apply_key`.

    On POSIX the terminal is put in cbreak mode (no line buffering, no echo) and restored by `close`; cbreak keeps
    signal keys working, so Ctrl-C still raises KeyboardInterrupt in the main thread. On Windows the console is read
    with msvcrt, which needs no mode change. When the stream is not a terminal, or this process runs in the
    background, nothing happens. Use as a context manager; `close` is safe to call twice.

    Args:
        state: the controls to change.
        on_quit: called (on the reader thread) when a quit key is pressed.
        stream: what to read, a file object or a file descriptor; None means sys.stdin. On Windows the console is
            read whatever the stream, which only decides whether to read at all.
    """

    def __init__(self, state: ControlState, on_quit: Callable[[], None], stream: TextIO | int | None = None) -> None:
        self._state = state
        self._on_quit = on_quit
        self._fd = _fileno(sys.stdin if stream is None else stream)
        self._saved: list | None = None  # termios attributes to restore; None when the mode was not changed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        # close() may run on the reader (from on_quit) and the main thread at once; whichever returns last must
        # find the terminal restored, or the process could exit with it still in cbreak mode.
        self._close_lock = threading.Lock()

    @property
    def active(self) -> bool:
        """Whether keys are being read."""
        return self._thread is not None

    def start(self) -> TerminalKeys:
        """Start reading keys if the stream is a terminal in the foreground."""
        if self._closed:
            raise RuntimeError("TerminalKeys cannot be started again after close()")
        if self._thread is not None:
            return self
        if self._fd is None or not os.isatty(self._fd):
            log.debug("standard input is not a terminal: no keyboard controls there")
            return self
        if sys.platform == "win32":
            target = self._read_windows
        else:
            if not self._enter_cbreak():
                return self
            target = self._read_posix
        # If the main thread dies in a way that skips close() (e.g. sys.exit from elsewhere), still restore.
        atexit.register(self.close)
        self._thread = threading.Thread(target=target, name="livemood-terminal-keys", daemon=True)
        self._thread.start()
        log.info(describe_keys())
        return self

    def _enter_cbreak(self) -> bool:
        import termios
        import tty

        try:
            if os.tcgetpgrp(self._fd) != os.getpgrp():
                # Changing the mode of our terminal from the background would stop the process with SIGTTOU.
                log.debug("running in the background: no keyboard controls from the terminal")
                return False
        except OSError:
            pass  # not this process's controlling terminal (e.g. a pty handed in): job control does not apply
        try:
            self._saved = termios.tcgetattr(self._fd)
            # TCSANOW rather than the default TCSAFLUSH keeps keys typed before the start.
            tty.setcbreak(self._fd, termios.TCSANOW)
        except termios.error as e:
            log.debug("cannot put the terminal in cbreak mode (%s): no keyboard controls there", e)
            self._saved = None
            return False
        return True

    def _press(self, key: str) -> None:
        # An exception here would end the reader thread and silently take the keys away: log it and go on.
        try:
            if apply_key(self._state, key):
                self._on_quit()
        except Exception:
            log.exception("key %r failed", key)

    def _read_posix(self) -> None:
        import select

        while not self._stop.is_set():
            ready, _, _ = select.select([self._fd], [], [], POLL_S)
            if not ready:
                continue
            try:
                data = os.read(self._fd, READ_BYTES)
            except OSError as e:  # EIO once the terminal hangs up
                log.debug("terminal read failed (%s): no more keyboard controls", e)
                return
            if not data:
                return
            # Our keys are ASCII, so a multi-byte character split across reads only garbles keys we ignore.
            for key in _split_keys(data.decode("utf-8", "replace")):
                if self._stop.is_set():  # on_quit closed us: the keys after 'q' no longer count
                    return
                self._press(key)

    def _read_windows(self) -> None:
        import msvcrt

        while not self._stop.wait(POLL_S):
            while not self._stop.is_set() and msvcrt.kbhit():
                key = msvcrt.getwch()
                if key in ("\x00", "\xe0"):  # arrow and function keys: a prefix, then their code; skip both
                    msvcrt.getwch()
                    continue
                self._press(key)

    def close(self) -> None:
        """Stop reading and restore the terminal's settings. Safe to call twice."""
        with self._close_lock:
            self._closed = True
            self._stop.set()
            thread, self._thread = self._thread, None
        if thread is not None:
            atexit.unregister(self.close)
            # on_quit may call close() from the reader thread itself; a thread cannot join itself.
            if thread is not threading.current_thread():
                thread.join(JOIN_TIMEOUT_S)
        with self._close_lock:
            if self._saved is not None:
                import termios

                try:
                    termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)
                except termios.error as e:  # the terminal may be gone already
                    log.debug("could not restore the terminal settings: %s", e)
                self._saved = None

    def __enter__(self) -> TerminalKeys:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def global_key(char: str | None, vk: int | None, platform: str = sys.platform) -> str | None:
    """The key (as for `apply_key`) that a key pressed with Ctrl+left Alt stands for, or None.

    `char` and `vk` are what pynput reports for the key; which of them identifies it depends on the platform.
    """
    if platform == "win32":
        return WINDOWS_VKS.get(vk) if vk is not None else None
    if platform == "darwin":
        return MAC_VKS.get(vk) if vk is not None else None
    return GLOBAL_CHARS.get(char) if char is not None else None


class GlobalKeys:
    """System-wide hotkeys (Ctrl + left Alt + key, see `global_key`) through pynput, for when another window has focus.

    pynput is optional (`pip install 'livemood[hotkeys]'`). Without it, or without a display it can use, `start`
    logs one line (debug: `-v` shows it) and does nothing. pynput only observes keys; the focused application still
    receives them.

    A plain pynput Listener is used, with the modifiers tracked here, rather than pynput's GlobalHotKeys: that one
    remembers every key of a combination as held until the same character is released, and a character typed with
    Shift is released as another ('+' pressed, '=' released), so ordinary typing left half a combination behind and
    a later Ctrl+Alt alone fired it. Here only the modifiers are tracked; a key acts on its press.
    Use as a context manager; `close` is safe to call twice.
    """

    def __init__(self, state: ControlState, on_quit: Callable[[], None]) -> None:
        self._state = state
        self._on_quit = on_quit
        self._listener: Any = None  # a pynput keyboard.Listener (a Thread); None when not listening
        self._ctrl: frozenset[object] = frozenset()  # pynput's Key values for either Ctrl
        self._alt: frozenset[object] = frozenset()  # pynput's Key values for the left Alt
        self._held: set[object] = set()  # the Ctrl and left Alt keys now down; touched only by pynput's thread

    @property
    def active(self) -> bool:
        """Whether the hotkeys are being listened for."""
        return self._listener is not None

    def start(self) -> GlobalKeys:
        """Start listening if pynput can; otherwise log why not, once."""
        if self._listener is not None:
            return self
        try:
            from pynput import keyboard
        except ImportError as e:
            if isinstance(e, ModuleNotFoundError) and e.name == "pynput":
                reason = "pynput is not installed (pip install 'livemood[hotkeys]')"
            else:  # pynput raises ImportError when its backend cannot start, e.g. no X display
                reason = first_line(e)
            log.debug("global hotkeys off: %s", reason)
            return self
        key = keyboard.Key
        self._ctrl = frozenset((key.ctrl, key.ctrl_l, key.ctrl_r))
        self._alt = frozenset((key.alt, key.alt_l))  # equal to each other; never alt_r or alt_gr
        try:
            listener = keyboard.Listener(on_press=self._on_press, on_release=self._on_release)
            listener.start()
        except Exception as e:  # a backend failing late (e.g. no input permission) must not stop the filter
            log.debug("global hotkeys off: %s", e)
            return self
        self._listener = listener
        log.info("global hotkeys: %s", GLOBAL_HELP.format(n=len(EMOTION_BY_KEY)))
        return self

    def _on_press(self, key: object, *_: object) -> None:
        # *_: pynput 1.8 also passes whether the event was injected; 1.7 does not.
        if key in self._ctrl or key in self._alt:
            self._held.add(key)
            return
        if not (self._held & self._ctrl and self._held & self._alt):
            return
        action = global_key(getattr(key, "char", None), getattr(key, "vk", None))
        if action is None:
            return
        # pynput stops its listener when a callback raises: log instead, so the hotkeys keep working.
        try:
            if apply_key(self._state, action):
                self._on_quit()
        except Exception:
            log.exception("hotkey %r failed", action)

    def _on_release(self, key: object, *_: object) -> None:
        self._held.discard(key)

    def close(self) -> None:
        """Stop listening. Safe to call twice."""
        listener, self._listener = self._listener, None
        if listener is None:
            return
        listener.stop()
        if listener is not threading.current_thread():
            try:
                listener.join(JOIN_TIMEOUT_S)  # pynput re-raises here what failed on its thread
            except Exception as e:
                log.debug("global hotkey listener ended with: %s", e)

    def __enter__(self) -> GlobalKeys:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
