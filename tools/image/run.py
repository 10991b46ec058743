"""Run the built image without a node: its root filesystem under Debian's runc.

``unpacked(archive)`` loads the OCI archive into buildah's storage (the same layers a node's
containerd imports) and mounts a container's root filesystem; ``run()`` starts a command
in it the way the chart's Pod does: as the image's numeric user, read-only root, a tmpfs
at ``/tmp`` (the chart's one writable volume), all capabilities dropped, no new
privileges, in new PID, mount, IPC, UTS and network namespaces (only a loopback device that
is down: nothing in it can send a packet anywhere).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from image.tools import RUNTIME, ImageError, buildah, ensure_programs


@dataclass(frozen=True)
class Unpacked:
    rootfs: Path
    """The image's root filesystem, mounted (read-write on the host; read-only in runs)."""
    config: dict[str, Any]
    """The image's OCI config (``User``, ``Env``, ``Cmd``, ``WorkingDir``, ...)."""
    image_id: str
    names: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Result:
    returncode: int | None
    """None when the run was stopped after ``until`` matched."""
    output: str
    """stdout and stderr, interleaved."""


@contextmanager
def unpacked(archive: Path) -> Iterator[Unpacked]:
    ensure_programs("buildah", "runc")
    image_id = buildah("pull", "--quiet", f"oci-archive:{archive}", capture=True).split()[-1]
    inspected = json.loads(buildah("inspect", "--type", "image", image_id, capture=True))
    config: dict[str, Any] = inspected["OCIv1"].get("config", {})
    container = buildah("from", "--pull=never", image_id, capture=True).strip()
    try:
        rootfs = Path(buildah("mount", container, capture=True).strip())
        yield Unpacked(rootfs=rootfs, config=config, image_id=image_id, names=[])
    finally:
        buildah("umount", container, check=False, capture=True)
        buildah("rm", container, check=False, capture=True)


def numeric_user(config: dict[str, Any]) -> tuple[int, int]:
    """The image's ``USER`` as (uid, gid); an error unless both are numbers."""
    user = str(config.get("User", ""))
    match = re.fullmatch(r"(\d+):(\d+)", user)
    if not match:
        raise ImageError(f"the image's USER is {user!r}, not a numeric uid:gid")
    return int(match.group(1)), int(match.group(2))


def spec(
    image: Unpacked,
    argv: Sequence[str] | None,
    env: dict[str, str],
    user: tuple[int, int] | None,
) -> dict[str, Any]:
    """The runtime configuration: runc's default, hardened like the chart's Pod."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([RUNTIME, "spec", "--bundle", tmp], check=True)
        config: dict[str, Any] = json.loads((Path(tmp) / "config.json").read_text())
    image_env = [e for e in image.config.get("Env", []) if e.split("=", 1)[0] not in env]
    uid, gid = user or numeric_user(image.config)
    config["process"].update(
        terminal=False,
        user={"uid": uid, "gid": gid},
        args=list(argv or [*image.config.get("Entrypoint", []), *image.config.get("Cmd", [])]),
        env=[*image_env, *(f"{k}={v}" for k, v in env.items())],
        cwd=image.config.get("WorkingDir") or "/",
        capabilities={},
        noNewPrivileges=True,
    )
    config["root"] = {"path": str(image.rootfs), "readonly": True}
    config["hostname"] = "vectorschema-smoke"
    config["mounts"].append(
        {
            "destination": "/tmp",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "nodev", "mode=1777", "size=65536k"],
        }
    )
    return config


def run(
    image: Unpacked,
    argv: Sequence[str] | None = None,
    *,
    env: dict[str, str] | None = None,
    user: tuple[int, int] | None = None,
    until: str | None = None,
    timeout: float = 120.0,
) -> Result:
    """Run ``argv`` (default: the image's entrypoint and command) in the image.

    With ``until``, a regular expression: stop the container as soon as its output matches
    (``returncode`` None). Otherwise wait for it to exit. Either way an ``ImageError`` after
    ``timeout`` seconds.
    """
    state = Path(tempfile.mkdtemp(prefix="vectorschema-runc-"))
    bundle = state / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps(spec(image, argv, env or {}, user)))
    name = f"vectorschema-smoke-{uuid.uuid4().hex[:8]}"
    runc = [RUNTIME, "--root", str(state / "runc")]
    proc = subprocess.Popen(
        [*runc, "run", "--bundle", str(bundle), name],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    matched = threading.Event()
    pattern = re.compile(until) if until else None

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if pattern and pattern.search(line):
                matched.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    try:
        while not matched.is_set() and proc.poll() is None and time.monotonic() < deadline:
            matched.wait(0.1)
        if matched.is_set():
            return Result(returncode=None, output="".join(lines))
        if proc.poll() is None:
            raise ImageError(
                f"{argv or 'the image command'} did not "
                f"{'print ' + repr(until) if until else 'exit'} within {timeout:.0f} s; output:\n"
                + "".join(lines)
            )
        reader.join(10)
        return Result(returncode=proc.returncode, output="".join(lines))
    finally:
        if proc.poll() is None:
            subprocess.run([*runc, "kill", name, "KILL"], capture_output=True, check=False)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        subprocess.run([*runc, "delete", "--force", name], capture_output=True, check=False)
        shutil.rmtree(state, ignore_errors=True)


def tree_size(root: Path) -> int:
    """Bytes of the files under ``root`` (as ``du --apparent-size``, hard links once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for path in root.rglob("*"):
        st = path.lstat()
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total
