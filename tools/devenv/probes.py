"""HTTP probes of the API server and the build of its binaries (``build.sh``)."""

from __future__ import annotations

import collections
import http.client
import ssl
import subprocess
import sys
from pathlib import Path

from devenv.errors import ControlPlaneError
from devenv.paths import BUILD_SCRIPT


def https_get(
    server: str, path: str, context: ssl.SSLContext, timeout: float = 5.0
) -> tuple[int, bytes]:
    """GET ``server + path``; returns (status, body). Raises OSError on connection errors."""
    url = server.removeprefix("https://")
    host, _, port = url.partition(":")
    conn = http.client.HTTPSConnection(host, int(port or 443), context=context, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Accept": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def summarize(body: bytes) -> str:
    """The failing checks of a /readyz answer, or the start of any other body."""
    text = body.decode("utf-8", "replace")
    failed = [ln[3:].split(" failed", 1)[0] for ln in text.splitlines() if ln.startswith("[-]")]
    if failed:
        return "failed checks: " + ", ".join(failed)
    return " ".join(text.split())[:300]


def client_ssl_context(ca_file: Path, cert_file: Path, key_file: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca_file))
    ctx.load_cert_chain(str(cert_file), str(key_file))
    return ctx


# --------------------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------------------


def build_binaries(script: Path = BUILD_SCRIPT) -> Path:
    """Run ``build.sh`` (progress on our stderr); return the bin dir (its last stdout line)."""
    if not script.is_file():
        raise ControlPlaneError(f"build script not found: {script}")
    proc = subprocess.Popen(
        ["bash", str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    tail: collections.deque[str] = collections.deque(maxlen=20)
    assert proc.stderr is not None and proc.stdout is not None
    for line in proc.stderr:
        sys.stderr.write(line)
        sys.stderr.flush()
        if line.strip():
            tail.append(line.rstrip("\n"))
    out = proc.stdout.read()
    rc = proc.wait()
    if rc != 0:
        last = tail[-1].removeprefix("controlplane: ") if tail else f"exit status {rc}"
        raise ControlPlaneError(f"building the control plane failed: {last}")
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    if not lines:
        raise ControlPlaneError(f"{script} printed no bin directory")
    return Path(lines[-1])


# --------------------------------------------------------------------------------------
