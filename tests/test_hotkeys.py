"""Keyboard controls: the key map, OpenCV key codes, the terminal reader through a real pseudo-terminal, and
global hotkeys degrading without pynput."""

from __future__ import annotations

import enum
import io
import logging
import os
import sys
import threading
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar

import pytest

from livemood.config import EMOTIONS, Controls
from livemood.controls import ControlState
from livemood.live import keys as hotkeys
from livemood.live.keys import (
    ALL_KEYS,
    ESC,
    GlobalKeys,
    TerminalKeys,
    apply_key,
    describe_keys,
    global_key,
    key_from_waitkey,
)

WAIT_S = 10.0  # a guard against hanging if the reader thread is broken, never a timing check

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals and termios are POSIX only")


def state_at(**fields: object) -> ControlState:
    return ControlState(Controls(**fields))


# --- apply_key ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "emotion"), [(str(i), name) for i, name in enumerate(EMOTIONS, start=1)])
def test_digit_keys_pick_each_emotion(key: str, emotion: str) -> None:
    state = state_at(emotion="contempt" if emotion == "neutral" else "neutral", intensity=0.4, bypass=True)
    assert apply_key(state, key) is False
    assert state.get() == Controls(emotion, 0.4, True)


UP = [i / 10 for i in range(1, 11)] + [1.0] * 4  # from 0: up to 1, then it stays
DOWN = [i / 10 for i in range(9, -1, -1)] + [0.0] * 4  # from 1: down to 0, then it stays


@pytest.mark.parametrize(("key", "start", "expected"),
                         [("+", 0.0, UP), ("=", 0.0, UP), ("-", 1.0, DOWN), ("_", 1.0, DOWN)])
def test_intensity_keys_stop_at_the_ends_on_exact_tenths(key: str, start: float, expected: list[float]) -> None:
    state = state_at(intensity=start)
    seen = []
    for _ in range(14):
        assert apply_key(state, key) is False
        seen.append(state.get().intensity)
    # Exact equality on purpose: ten additions of 0.1 in floats would give 0.9999999999999999.
    assert seen == expected


def test_intensity_up_and_down_land_on_exact_tenths() -> None:
    state = state_at(intensity=0.3)
    for keys, expected in (("+++++", 0.8), ("-----", 0.3), ("---------", 0.0), ("+++++++", 0.7)):
        for key in keys:
            apply_key(state, key)
        assert state.get().intensity == expected


def test_off_grid_intensity_moves_to_the_next_tenth() -> None:
    state = state_at(intensity=0.55)
    apply_key(state, "+")
    assert state.get().intensity == 0.6
    state = state_at(intensity=0.55)
    apply_key(state, "-")
    assert state.get().intensity == 0.5


@pytest.mark.parametrize("key", ["0", " "])
def test_bypass_toggles_and_keeps_the_rest(key: str) -> None:
    state = state_at(emotion="sad", intensity=0.7)
    assert apply_key(state, key) is False
    assert state.get() == Controls("sad", 0.7, True)
    assert apply_key(state, key) is False
    assert state.get() == Controls("sad", 0.7, False)


@pytest.mark.parametrize("key", ["q", ESC, "\x03"])
def test_quit_keys_ask_to_quit_and_change_nothing(key: str) -> None:
    state = state_at(emotion="happy", intensity=0.5)
    assert apply_key(state, key) is True
    assert state.get() == Controls("happy", 0.5)


@pytest.mark.parametrize("key", ["9", "a", "Q", "\n", "é", ""])
def test_other_keys_do_nothing(key: str) -> None:
    state = state_at(emotion="happy", intensity=0.5)
    assert apply_key(state, key) is False
    assert state.get() == Controls("happy", 0.5)


def test_each_change_is_logged_on_one_line(caplog: pytest.LogCaptureFixture) -> None:
    state = state_at()
    with caplog.at_level(logging.INFO, logger="livemood.controls"):
        for key in "3+0":
            apply_key(state, key)
    lines = [r.getMessage() for r in caplog.records if r.name == "livemood.controls"]
    assert lines == ["emotion sad, intensity 0.0", "emotion sad, intensity 0.1", "emotion sad, intensity 0.1 (bypass)"]


def test_concurrent_presses_are_not_lost() -> None:
    # Terminal, window and global keys call apply_key from different threads; none of their steps may be lost.
    state = state_at(intensity=0.0)
    barrier = threading.Barrier(4)

    def press() -> None:
        barrier.wait()
        for _ in range(2):
            apply_key(state, "+")

    threads = [threading.Thread(target=press) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert state.get().intensity == 0.8


def test_describe_keys_names_every_emotion() -> None:
    text = describe_keys()
    assert all(f"{i} {name}" in text for i, name in enumerate(EMOTIONS, start=1))


# --- OpenCV waitKey codes --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "key"),
    [
        (-1, None),  # no key pressed during the frame
        (ord("1"), "1"),
        (ord("8"), "8"),
        (ord("0"), "0"),
        (ord(" "), " "),
        (ord("+"), "+"),
        (ord("="), "="),
        (ord("-"), "-"),
        (ord("q"), "q"),
        (27, ESC),
        (3, "\x03"),
        (0x100000 | ord("q"), "q"),  # modifier flags in the high bits (some GTK builds) are masked off
        (0x10000 | ord("2"), "2"),
        (65362, None),  # GTK's Up arrow: its low byte is 'R', which has no action
        (ord("Q"), None),
        (ord("a"), None),
        (255, None),
    ],
)
def test_key_from_waitkey(code: int, key: str | None) -> None:
    assert key_from_waitkey(code) == key


def test_waitkey_path_drives_apply_key() -> None:
    state = state_at()
    for code in (ord("5"), ord("+"), ord("+"), -1, 0x100000 | ord("0")):
        key = key_from_waitkey(code)
        if key is not None:
            assert apply_key(state, key) is False
    assert state.get() == Controls("surprised", 0.2, True)


def test_every_mapped_key_survives_waitkey() -> None:
    assert all(key_from_waitkey(ord(key)) == key for key in ALL_KEYS)


# --- the terminal, through a real pseudo-terminal --------------------------------------------------------------------


@pytest.fixture
def pty_pair() -> Iterator[tuple[int, int]]:
    """(master, slave) file descriptors of a fresh pseudo-terminal in its default (canonical, echoing) mode."""
    if sys.platform == "win32":
        pytest.skip("pseudo-terminals are POSIX only")
    master, slave = os.openpty()
    try:
        yield master, slave
    finally:
        os.close(master)
        os.close(slave)


class QuitRecorder:
    """An on_quit that remembers the controls at the moment of quitting, then sets an event."""

    def __init__(self, state: ControlState) -> None:
        self.state = state
        self.seen: list[Controls] = []
        self.event = threading.Event()

    def __call__(self) -> None:
        self.seen.append(self.state.get())
        self.event.set()

    def wait(self) -> bool:
        return self.event.wait(WAIT_S)


@posix_only
def test_terminal_keys_change_the_state_and_restore_the_terminal(pty_pair: tuple[int, int]) -> None:
    import termios

    master, slave = pty_pair
    before = termios.tcgetattr(slave)
    state = state_at()
    quit_ = QuitRecorder(state)
    with TerminalKeys(state, quit_, stream=slave) as keys:
        assert keys.active
        lflag = termios.tcgetattr(slave)[3]
        assert not lflag & termios.ICANON, "keys must arrive one by one, without Enter"
        assert not lflag & termios.ECHO, "keys must not be echoed over the log"
        assert lflag & termios.ISIG, "Ctrl-C must still raise SIGINT"
        # 'q' comes last: the reader handles keys in order, so when it quits all the others are applied.
        os.write(master, b"2+++-0q")
        assert quit_.wait()
    assert quit_.seen == [Controls("happy", 0.2, True)]
    assert state.get() == Controls("happy", 0.2, True)
    assert not keys.active
    assert termios.tcgetattr(slave) == before


@posix_only
def test_terminal_keys_read_keys_one_write_at_a_time(pty_pair: tuple[int, int]) -> None:
    master, slave = pty_pair
    state = state_at()
    quit_ = QuitRecorder(state)
    with TerminalKeys(state, quit_, stream=slave):
        for key in b"7=_ ":
            os.write(master, bytes([key]))
        os.write(master, ESC.encode())  # a lone Esc is the Esc key: quit
        assert quit_.wait()
    assert quit_.seen == [Controls("disgusted", 0.0, True)]


@posix_only
def test_escape_sequences_are_not_esc(pty_pair: tuple[int, int]) -> None:
    master, slave = pty_pair
    state = state_at()
    quit_ = QuitRecorder(state)
    with TerminalKeys(state, quit_, stream=slave):
        # Up arrow (CSI), F1 (SS3), Alt+q, Page Up (CSI with a parameter); only then a real key and 'q'.
        os.write(master, b"\x1b[A\x1bOP\x1bq\x1b[5~4q")
        assert quit_.wait()
    # Had any of those read as Esc or 'q', the quit would have come before '4' was applied.
    assert quit_.seen == [Controls("angry", 0.0)]


@posix_only
def test_terminal_is_restored_when_the_body_raises(pty_pair: tuple[int, int]) -> None:
    import termios

    _master, slave = pty_pair
    before = termios.tcgetattr(slave)
    state = state_at()
    with pytest.raises(KeyboardInterrupt), TerminalKeys(state, lambda: None, stream=slave) as keys:
        assert termios.tcgetattr(slave) != before
        raise KeyboardInterrupt
    assert termios.tcgetattr(slave) == before
    keys.close()  # a second close does nothing
    assert termios.tcgetattr(slave) == before
    with pytest.raises(RuntimeError):
        keys.start()


@posix_only
def test_on_quit_may_close_from_the_reader_thread(pty_pair: tuple[int, int]) -> None:
    import termios

    master, slave = pty_pair
    before = termios.tcgetattr(slave)
    state = state_at()
    done = threading.Event()
    keys = TerminalKeys(state, lambda: (keys.close(), done.set()), stream=slave).start()
    os.write(master, b"3q5")
    assert done.wait(WAIT_S)
    assert not keys.active
    assert termios.tcgetattr(slave) == before
    assert state.get().emotion == "sad"  # the '5' after the quit was not applied
    keys.close()


@posix_only
def test_file_object_stream_is_accepted(pty_pair: tuple[int, int]) -> None:
    master, slave = pty_pair
    state = state_at()
    quit_ = QuitRecorder(state)
    stream = open(slave, closefd=False)  # noqa: SIM115 - the fixture owns the descriptor
    with stream, TerminalKeys(state, quit_, stream=stream):
        os.write(master, b"6q")
        assert quit_.wait()
    assert quit_.seen == [Controls("fearful", 0.0)]


def test_not_a_terminal_does_nothing(caplog: pytest.LogCaptureFixture) -> None:
    read_end, write_end = os.pipe()
    try:
        state = state_at()
        with caplog.at_level(logging.DEBUG, logger="livemood.live.keys"), TerminalKeys(
                state, lambda: None, stream=read_end) as keys:
            os.write(write_end, b"2+q")
            assert not keys.active
        assert state.get() == Controls()
        assert "not a terminal" in caplog.text
    finally:
        os.close(read_end)
        os.close(write_end)


def test_default_stream_without_a_descriptor_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("2q"))  # like pytest's own capture: fileno() raises
    with TerminalKeys(state_at(), lambda: None) as keys:
        assert not keys.active
    monkeypatch.setattr(sys, "stdin", None)  # pythonw on Windows
    with TerminalKeys(state_at(), lambda: None) as keys:
        assert not keys.active


# --- global hotkeys ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("platform", "char", "vk", "key"),
    [
        ("linux", "3", 0x33, "3"),
        ("linux", "=", 0x3D, "+"),
        ("linux", "+", 0x2B, "+"),  # '+' unshifted (German layout), or Shift+'=' on US
        ("linux", "-", 0x2D, "-"),
        ("linux", "_", 0x5F, "-"),
        ("linux", "0", 0x30, "0"),
        ("linux", "q", 0x71, "q"),
        ("linux", "9", 0x39, None),  # no ninth emotion
        ("linux", "a", 0x61, None),
        ("linux", None, 0xFF52, None),  # a key without a character (Up)
        ("win32", None, 0x34, "4"),  # Windows: the physical key, whatever character Ctrl+Alt makes of it
        ("win32", "{", 0x37, "7"),
        ("win32", None, 0xBB, "+"),
        ("win32", None, 0xBD, "-"),
        ("win32", None, 0x51, "q"),
        ("win32", "3", None, None),
        ("darwin", "¡", 0x12, "1"),  # macOS: the ANSI key code; Option turns '1' into '¡'
        ("darwin", None, 0x1C, "8"),
        ("darwin", None, 0x18, "+"),
        ("darwin", None, 0x0C, "q"),
        ("darwin", "3", 0x30, None),  # 0x30 is Tab there, not '0'
    ],
)
def test_global_key_per_platform(platform: str, char: str | None, vk: int | None, key: str | None) -> None:
    assert global_key(char, vk, platform) == key


def test_global_keys_reach_every_action_on_every_platform() -> None:
    actions = {*(str(i) for i in range(1, len(EMOTIONS) + 1)), "+", "-", "0", "q", "[", "]", "n"}
    assert set(hotkeys.GLOBAL_CHARS.values()) == actions
    assert set(hotkeys.WINDOWS_VKS.values()) == actions
    assert set(hotkeys.MAC_VKS.values()) == actions


def test_global_keys_degrade_without_pynput(caplog: pytest.LogCaptureFixture,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules makes `import pynput` fail as if it were not installed, whether it is or not.
    monkeypatch.setitem(sys.modules, "pynput", None)
    state = state_at()
    with caplog.at_level(logging.DEBUG, logger="livemood.live.keys"), GlobalKeys(state, lambda: None) as keys:
        assert not keys.active
    keys.close()  # safe twice
    lines = [r.getMessage() for r in caplog.records if r.name == "livemood.live.keys"]
    assert lines == ["global hotkeys off: pynput is not installed (pip install 'livemood[hotkeys]')"]
    assert state.get() == Controls()


def test_global_keys_degrade_without_a_display(caplog: pytest.LogCaptureFixture,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # pynput itself imports, but its backend cannot: it raises a multi-line ImportError like this one.
    def no_backend(name: str) -> object:
        raise ImportError("this platform is not supported: ('failed to acquire X connection: Bad display name')"
                          "\n\nTry one of the following resolutions:\n\n * Please make sure ...")

    fake = types.ModuleType("pynput")
    fake.__getattr__ = no_backend  # type: ignore[method-assign]
    monkeypatch.setitem(sys.modules, "pynput", fake)
    with caplog.at_level(logging.DEBUG, logger="livemood.live.keys"), GlobalKeys(state_at(), lambda: None) as keys:
        assert not keys.active
    lines = [r.getMessage() for r in caplog.records if r.name == "livemood.live.keys"]
    assert len(lines) == 1
    assert lines[0].startswith("global hotkeys off: this platform is not supported")
    assert "\n" not in lines[0]


class FakeKey(enum.Enum):
    """pynput's Key for the modifiers, with X11's key codes (left and plain Alt are the same key there)."""

    alt = 0xFFE9
    alt_l = 0xFFE9
    alt_r = 0xFFEA
    alt_gr = 0xFF7E
    ctrl = 0xFFE3
    ctrl_l = 0xFFE3
    ctrl_r = 0xFFE4
    shift = 0xFFE1


@dataclass(frozen=True)
class FakeKeyCode:
    """pynput's KeyCode for a character key as X11 reports it: the character and its key symbol."""

    char: str
    vk: int


def char_key(char: str) -> FakeKeyCode:
    return FakeKeyCode(char, ord(char))


class FakeListener:
    """Stands in for pynput.keyboard.Listener: keeps the callbacks so a test can press and release keys."""

    instances: ClassVar[list[FakeListener]] = []

    def __init__(self, on_press: Callable[..., None], on_release: Callable[..., None]) -> None:
        self.on_press, self.on_release = on_press, on_release
        self.started = self.stopped = False
        FakeListener.instances.append(self)

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True

    def join(self, timeout: float | None = None) -> None:
        pass

    def combo(self, *keys: object) -> None:
        """Press the keys in order, then release them in reverse, passing `injected` like pynput 1.8."""
        for key in keys:
            self.on_press(key, False)
        for key in reversed(keys):
            self.on_release(key, False)


@pytest.fixture
def fake_pynput(monkeypatch: pytest.MonkeyPatch) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("the fake key events are X11's")
    FakeListener.instances = []
    fake = types.ModuleType("pynput")
    fake.keyboard = types.SimpleNamespace(Key=FakeKey, Listener=FakeListener)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynput", fake)


@pytest.mark.usefixtures("fake_pynput")
def test_global_keys_act_on_ctrl_left_alt_combinations() -> None:
    state = state_at()
    quits = []
    with GlobalKeys(state, lambda: quits.append(state.get())) as keys:
        assert keys.active
        (listener,) = FakeListener.instances
        assert listener.started
        ctrl, alt = FakeKey.ctrl, FakeKey.alt
        listener.combo(ctrl, alt, char_key("4"))
        listener.combo(alt, FakeKey.ctrl_r, char_key("="))  # either order, either Ctrl
        listener.combo(ctrl, alt, char_key("="))
        listener.combo(ctrl, alt, char_key("-"))
        # Held modifiers stay held across several keys.
        listener.on_press(ctrl, False)
        listener.on_press(alt, False)
        for char in "0+":
            listener.on_press(char_key(char), False)
            listener.on_release(char_key(char), False)
        listener.on_release(alt, False)
        listener.on_release(ctrl, False)
        assert state.get() == Controls("angry", 0.2, True)
        assert quits == []
        listener.combo(ctrl, alt, char_key("q"))
        assert quits == [Controls("angry", 0.2, True)]
    assert listener.stopped
    assert not keys.active
    keys.close()


@pytest.mark.usefixtures("fake_pynput")
def test_global_keys_leave_ordinary_typing_alone() -> None:
    state = state_at()
    with GlobalKeys(state, lambda: None):
        (listener,) = FakeListener.instances
        ctrl, alt = FakeKey.ctrl, FakeKey.alt
        for char in "hello 1+1=2 q":
            listener.combo(char_key(char))
        listener.combo(ctrl, char_key("2"))  # one modifier is not enough
        listener.combo(alt, char_key("2"))
        listener.combo(ctrl, FakeKey.alt_gr, char_key("2"))  # AltGr (Windows reports it as Ctrl + right Alt)
        listener.combo(ctrl, FakeKey.alt_r, char_key("2"))
        # Shift+'=' is pressed as '+' and released as '=': nothing may stay half-pressed for a later Ctrl+Alt.
        listener.on_press(FakeKey.shift, False)
        listener.on_press(char_key("+"), False)
        listener.on_release(FakeKey.shift, False)
        listener.on_release(char_key("="), False)
        listener.combo(ctrl, alt)
        listener.combo(ctrl, alt, char_key("a"))
        listener.combo(char_key("3"))  # the modifiers were released
        listener.on_press(None, False)  # pynput passes None for a key it could not read
    assert state.get() == Controls()


@pytest.mark.usefixtures("fake_pynput")
def test_a_failing_global_key_is_logged_not_raised(monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    # pynput stops listening when a callback raises.
    state = state_at()
    monkeypatch.setattr(state, "update", lambda **_: 1 / 0)
    with GlobalKeys(state, lambda: None), caplog.at_level(logging.ERROR, logger="livemood.live.keys"):
        (listener,) = FakeListener.instances
        listener.combo(FakeKey.ctrl, FakeKey.alt, char_key("1"))
    assert "hotkey '1' failed" in caplog.text
