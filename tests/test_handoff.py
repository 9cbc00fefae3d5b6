"""The drop policy, checked with a real producer thread and a slow consumer."""

from __future__ import annotations

import threading
import time

import pytest

from livemood.live.handoff import Closed, DropPolicy, Handoff

N = 200


def produce(handoff: Handoff[int], done: threading.Event) -> threading.Thread:
    def run() -> None:
        for i in range(N):
            handoff.put(i)
        done.set()
        handoff.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def consume_slowly(handoff: Handoff[int]) -> list[int]:
    got = []
    while True:
        try:
            item = handoff.get(timeout=5)
        except Closed:
            return got
        assert item is not None, "producer stalled"
        got.append(item)
        time.sleep(0.002)  # a consumer much slower than the producer


def test_latest_policy_keeps_the_newest_and_never_blocks_the_producer() -> None:
    handoff: Handoff[int] = Handoff(DropPolicy.LATEST, 1)
    done = threading.Event()
    thread = produce(handoff, done)
    got = consume_slowly(handoff)
    thread.join()
    assert got == sorted(got), "order kept"
    assert got[-1] == N - 1, "the newest item always arrives"
    assert handoff.dropped == N - len(got) > 0


def test_block_policy_loses_nothing_and_makes_the_producer_wait() -> None:
    handoff: Handoff[int] = Handoff(DropPolicy.BLOCK, 3)
    done = threading.Event()
    thread = produce(handoff, done)
    time.sleep(0.05)
    assert not done.is_set(), "the producer must wait while the hand-off is full"
    got = consume_slowly(handoff)
    thread.join()
    assert got == list(range(N))
    assert handoff.dropped == 0


def test_producer_error_reaches_the_consumer_after_the_items() -> None:
    handoff: Handoff[int] = Handoff(DropPolicy.BLOCK, 4)
    handoff.put(1)
    handoff.close(RuntimeError("decoder broke"))
    assert handoff.get() == 1
    with pytest.raises(RuntimeError, match="decoder broke"):
        handoff.get()


def test_closing_releases_a_waiting_producer() -> None:
    handoff: Handoff[int] = Handoff(DropPolicy.BLOCK, 1)
    handoff.put(0)
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(handoff.put(1)))
    thread.start()
    handoff.close()
    thread.join(timeout=5)
    assert result == [False]
