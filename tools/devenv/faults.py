"""Faults to inject into a running control plane, for the reliability tests.

- :func:`compact_etcd`: compact etcd's history up to its current revision, so a watch
  resumed from an older resourceVersion is answered ``410 Gone`` once the API server's
  watch cache no longer holds it (for instance after a kube-apiserver restart).
- :class:`TcpProxy`: a loopback TCP proxy to put in front of kube-apiserver. ``cut()``
  closes every connection through it (watches included); ``refuse()`` also closes every
  new one at once until ``resume()``. TLS passes through untouched: the API server's
  certificate is valid for 127.0.0.1, whichever port the client dials.
- :func:`proxied_kubeconfig`: the admin kubeconfig, pointed at such a proxy.
- :func:`crash`: SIGKILL every process of a plane and its node at once and forget them,
  as when their launcher dies: the node's shims, Pods, mounts and rules stay behind.

Stopping and starting one component is :meth:`ControlPlane.stop_component` /
:meth:`ControlPlane.start_component`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import threading
import urllib.request
from pathlib import Path
from typing import Any

from devenv import cleanup
from devenv.controlplane import ControlPlane
from devenv.errors import ControlPlaneError
from devenv.pki import write_private


def _etcd_post(plane: ControlPlane, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        plane.etcd_url + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            answer: dict[str, Any] = json.loads(response.read())
    except OSError as exc:
        raise ControlPlaneError(f"etcd {path}: {exc}") from None
    return answer


def etcd_revision(plane: ControlPlane) -> int:
    """etcd's current revision (the newest resourceVersion of the whole cluster)."""
    key = base64.b64encode(b"/registry/health-probe").decode()
    answer = _etcd_post(plane, "/v3/kv/range", {"key": key, "count_only": True})
    return int(answer["header"]["revision"])


def compact_etcd(plane: ControlPlane) -> int:
    """Compact etcd up to its current revision (physically); return that revision."""
    revision = etcd_revision(plane)
    _etcd_post(plane, "/v3/kv/compaction", {"revision": str(revision), "physical": True})
    return revision


def crash(plane: ControlPlane, keep_lock_holder: bool = False) -> int | None:
    """SIGKILL every process of ``plane`` and of its node (kubelet, containerd, the lock
    holder...) at once, and forget them: no clean-up runs. Container shims and Pods, which
    run in their own sessions, survive, as after a real crash of the launcher.

    ``keep_lock_holder=True`` spares the node's lock holder (so that nobody else cleans up
    before the caller has looked) and returns its PID, for the caller to kill."""
    node = plane.node
    procs = [*plane._procs, *(node._procs if node is not None else [])]
    holder = next((p for p in procs if p.name == "node-lock"), None)
    if keep_lock_holder and holder is not None:
        procs.remove(holder)
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
    for proc in procs:
        proc.popen.wait()
    plane._procs = []
    plane.node = None
    if node is not None:
        node._procs, node._record = [], None
    cleanup.unregister(plane)
    return holder.pid if keep_lock_holder and holder is not None else None


def proxied_kubeconfig(plane: ControlPlane, port: int, path: Path) -> Path:
    """A copy of the admin kubeconfig whose server is ``https://127.0.0.1:<port>``."""
    config = json.loads(plane.kubeconfig.read_text())
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = f"https://127.0.0.1:{port}"
    write_private(path, (json.dumps(config, indent=2) + "\n").encode())
    return path


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target``, one thread pair per connection."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._refusing = False
        self._closed = False
        #: Connections accepted and forwarded, and connections refused, since start.
        self.accepted = 0
        self.refused = 0
        self._thread = threading.Thread(target=self._accept_loop, name="tcp-proxy", daemon=True)
        self._thread.start()

    @classmethod
    def to(cls, server: str) -> TcpProxy:
        """A proxy to ``https://host:port``."""
        host, _, port = server.removeprefix("https://").partition(":")
        return cls(host, int(port))

    def cut(self) -> int:
        """Close every open connection (both ends); return how many were open."""
        with self._lock:
            sockets, self._open = list(self._open), set()
        for sock in sockets:
            _close(sock)
        return len(sockets) // 2

    def refuse(self) -> int:
        """Cut everything now and close every new connection at once until :meth:`resume`."""
        with self._lock:
            self._refusing = True
        return self.cut()

    def resume(self) -> None:
        with self._lock:
            self._refusing = False

    def close(self) -> None:
        with self._lock:
            self._closed = True
        _close(self._listener)
        self.cut()
        self._thread.join(timeout=5)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if self._closed:
                    _close(client)
                    return
                refusing = self._refusing
                if refusing:
                    self.refused += 1
            if refusing:
                _close(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self.accepted += 1
                self._open.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(src)
                self._open.discard(dst)
            _close(src)
            _close(dst)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
