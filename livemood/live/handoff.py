"""A bounded hand-off between a producer thread and the pipeline, with the drop policy as a parameter."""

from __future__ import annotations

import enum
import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class DropPolicy(enum.Enum):
    LATEST = "latest"  # live sources: a full hand-off discards its oldest item, the producer never waits
    BLOCK = "block"  # files: a full hand-off makes the producer wait, nothing is lost


class Closed(Exception):
    """The producer has finished and every item has been taken."""


class Handoff(Generic[T]):
    """Thread-safe queue of at most `capacity` items.

    The producer calls `put` and finally `close` (optionally with the exception that ended it); the consumer calls
    `get`, which raises `Closed` once the producer is done and the queue is empty, or re-raises the producer's error.
    """

    def __init__(self, policy: DropPolicy, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.policy = policy
        self.capacity = capacity
        self.dropped = 0
        self._items: deque[T] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._error: BaseException | None = None

    def put(self, item: T) -> bool:
        """Hand over one item; False if the hand-off was closed (the consumer has gone)."""
        with self._cond:
            if self.policy is DropPolicy.BLOCK:
                while len(self._items) >= self.capacity and not self._closed:
                    self._cond.wait()
            if self._closed:
                return False
            if len(self._items) >= self.capacity:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._cond.notify_all()
            return True

    def get(self, timeout: float | None = None) -> T | None:
        """The oldest item, or None if none arrived within `timeout` seconds."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self._closed, timeout):
                return None
            if self._items:
                item = self._items.popleft()
                self._cond.notify_all()
                return item
            if self._error is not None:
                raise self._error
            raise Closed

    def close(self, error: BaseException | None = None) -> None:
        """End the stream: wakes a waiting producer and, once drained, the consumer. Safe to call twice."""
        with self._cond:
            if not self._closed:
                self._closed = True
                self._error = error
            self._cond.notify_all()
