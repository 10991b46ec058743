"""Control planes of this process that must be stopped at interpreter exit or on SIGTERM.

Anything with a ``stop()`` method can be registered; :mod:`devenv.controlplane` registers
each :class:`~devenv.controlplane.ControlPlane` it starts (unless detached).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import threading
from types import FrameType
from typing import Protocol


class Stoppable(Protocol):
    def stop(self) -> None: ...


_LIVE: set[Stoppable] = set()
_LIVE_LOCK = threading.Lock()
_handlers_installed = False


def _stop_all_live() -> None:
    with _LIVE_LOCK:
        planes = list(_LIVE)
    for plane in planes:
        with contextlib.suppress(Exception):
            plane.stop()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    _stop_all_live()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def install_exit_handlers() -> None:
    """atexit always; SIGTERM only from the main thread and if nobody else handles it."""
    global _handlers_installed
    if _handlers_installed:
        return
    _handlers_installed = True
    atexit.register(_stop_all_live)
    if threading.current_thread() is threading.main_thread():
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, _on_sigterm)
        # Python's own SIGINT handler raises KeyboardInterrupt, which unwinds through
        # ``with``, ``finally`` and atexit; only SIG_DFL would kill us without clean-up.
        if signal.getsignal(signal.SIGINT) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGINT, _on_sigterm)


def register(thing: Stoppable) -> None:
    with _LIVE_LOCK:
        _LIVE.add(thing)


def unregister(thing: Stoppable) -> None:
    with _LIVE_LOCK:
        _LIVE.discard(thing)
