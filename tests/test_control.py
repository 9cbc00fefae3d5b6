"""`ControlState.watch`, which the control panel's WebSocket relies on."""

from __future__ import annotations

import pytest

from livemood.config import Controls, UsageError
from livemood.controls import ControlState

# --- ControlState.watch --------------------------------------------------------------------------------------------

def test_watchers_see_each_update_after_it_and_can_stop() -> None:
    state = ControlState(Controls())
    seen: list[tuple[Controls, Controls]] = []
    unwatch = state.watch(lambda controls: seen.append((controls, state.get())))  # get(): the lock is free
    state.update(emotion="sad")
    state.update(intensity=0.4)
    assert [c for c, _ in seen] == [Controls("sad"), Controls("sad", 0.4)]
    assert all(c == now for c, now in seen)
    unwatch()
    unwatch()  # safe twice
    state.update(emotion="happy")
    assert len(seen) == 2


def test_a_failing_watcher_neither_undoes_the_change_nor_stops_the_others(caplog: pytest.LogCaptureFixture) -> None:
    state = ControlState(Controls())
    seen: list[str] = []

    def broken(controls: Controls) -> None:
        raise RuntimeError("watcher broke")

    state.watch(broken)
    state.watch(lambda controls: seen.append(controls.emotion))
    assert state.update(emotion="angry").emotion == "angry"
    assert seen == ["angry"] and state.get().emotion == "angry"
    assert "watcher failed" in caplog.text


def test_an_invalid_update_tells_no_watcher() -> None:
    state = ControlState(Controls())
    seen: list[Controls] = []
    state.watch(seen.append)
    with pytest.raises(UsageError):
        state.update(emotion="bored")
    assert seen == [] and state.get() == Controls()
