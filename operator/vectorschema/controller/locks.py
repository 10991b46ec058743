"""One pass per resource at a time, across asyncio tasks, worker threads and the finaliser.

Passes run in worker threads (`asyncio.to_thread`), and a cancelled daemon does not stop
its thread: a lock held by the thread itself is the only thing that keeps a later pass, or
the finaliser, from running beside one still in flight. The kopf layer keeps one
`ResourceLocks` in its memo and hands it to every pass and to the finaliser.

After the finaliser released a resource, `released` remembers its UID: a pass that was
waiting for the lock sees it and writes nothing.

Nothing here outlives its resource: a lock exists only while someone holds it or waits
for it, and a released UID is kept until the resource is gone (`forget`, on its DELETED
event), so a thousand short-lived resources leave nothing behind (`sizes`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

Key = tuple[str, str]


class ResourceLocks:
    """A lock per (namespace, name) while in use; and the UIDs already released."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        #: key -> (its lock, how many hold it or wait for it)
        self._locks: dict[Key, tuple[threading.Lock, int]] = {}
        self._released: dict[Key, str] = {}

    def _enter(self, key: Key) -> threading.Lock:
        with self._guard:
            lock, users = self._locks.get(key, (None, 0))
            if lock is None:
                lock = threading.Lock()
            self._locks[key] = (lock, users + 1)
            return lock

    def _leave(self, key: Key) -> None:
        with self._guard:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    @contextlib.contextmanager
    def hold(self, key: Key, *, timeout: float = -1) -> Iterator[bool]:
        """Hold `key`'s lock (waiting at most `timeout` s; -1: as long as it takes).

        Yields whether it is held (False only after a timeout).
        """
        lock = self._enter(key)
        try:
            held = lock.acquire(timeout=timeout)
            try:
                yield held
            finally:
                if held:
                    lock.release()
        finally:
            self._leave(key)

    def busy(self, key: Key) -> bool:
        """Whether a pass (or the finaliser) holds `key` right now."""
        with self._guard:
            entry = self._locks.get(key)
        return entry is not None and entry[0].locked()

    def mark_released(self, key: Key, uid: str | None) -> None:
        if uid:
            with self._guard:
                self._released[key] = uid

    def released(self, key: Key, uid: str | None) -> bool:
        with self._guard:
            return bool(uid) and self._released.get(key) == uid

    def forget(self, key: Key) -> None:
        """The resource is gone: drop what is kept about it (a lock in use stays until
        its last user leaves)."""
        with self._guard:
            self._released.pop(key, None)

    def sizes(self) -> dict[str, int]:
        """How many entries each map holds (observability, the churn test)."""
        with self._guard:
            return {"locks": len(self._locks), "released": len(self._released)}
