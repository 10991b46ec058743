"""Unit tests of devenv's fault helpers that need no Kubernetes binaries: the TCP proxy."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from devenv.faults import TcpProxy


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    def echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(1024):
                conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


def roundtrip(port: int, payload: bytes = b"ping") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        return sock.recv(1024)


def wait_closed(sock: socket.socket) -> bytes:
    sock.settimeout(5)
    try:
        return sock.recv(1024)
    except ConnectionResetError:
        return b""


def test_forwards_both_ways(echo_port: int) -> None:
    with TcpProxy("127.0.0.1", echo_port) as proxy:
        assert roundtrip(proxy.port) == b"ping"
        assert proxy.accepted == 1


def test_cut_closes_open_connections_and_new_ones_still_work(echo_port: int) -> None:
    with TcpProxy("127.0.0.1", echo_port) as proxy:
        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        sock.sendall(b"a")
        assert sock.recv(10) == b"a"
        assert proxy.cut() == 1
        assert wait_closed(sock) == b""
        sock.close()
        assert roundtrip(proxy.port) == b"ping"


def test_refuse_until_resume(echo_port: int) -> None:
    with TcpProxy("127.0.0.1", echo_port) as proxy:
        proxy.refuse()
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
            assert wait_closed(sock) == b""
        deadline = time.monotonic() + 5
        while proxy.refused == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proxy.refused == 1
        proxy.resume()
        assert roundtrip(proxy.port) == b"ping"


def test_to_parses_a_server_url() -> None:
    with TcpProxy.to("https://127.0.0.1:6443") as proxy:
        assert proxy.target == ("127.0.0.1", 6443)
