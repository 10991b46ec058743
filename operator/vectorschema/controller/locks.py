"""One pass per resource at a time, across asyncio tasks, worker threads and the finaliser.

Passes run in worker threads (`asyncio.to_thread`), and a cancelled daemon does not stop
its thread: a lock held by the thread itself is the only thing that keeps a later pass, or
the finaliser, from running beside one still in flight. The kopf layer keeps one
`ResourceLocks` in its memo and hands it to every pass and to the finaliser.

After the finaliser released a resource, `released` remembers its UID: a pass that was
waiting for the lock sees it and writes nothing.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

Key = tuple[str, str]


class ResourceLocks:
    """A lock per (namespace, name), made on first use; and the UIDs already released."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[Key, threading.Lock] = {}
        self._released: set[str] = set()

    def lock(self, key: Key) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    @contextlib.contextmanager
    def hold(self, key: Key, *, timeout: float = -1) -> Iterator[bool]:
        """Hold `key`'s lock (waiting at most `timeout` s; -1: as long as it takes).

        Yields whether it is held (False only after a timeout).
        """
        lock = self.lock(key)
        held = lock.acquire(timeout=timeout)
        try:
            yield held
        finally:
            if held:
                lock.release()

    def busy(self, key: Key) -> bool:
        """Whether a pass (or the finaliser) holds `key` right now."""
        return self.lock(key).locked()

    def mark_released(self, uid: str | None) -> None:
        if uid:
            with self._guard:
                self._released.add(uid)

    def released(self, uid: str | None) -> bool:
        with self._guard:
            return bool(uid) and uid in self._released
