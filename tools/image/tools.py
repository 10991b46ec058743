"""The programs the image build uses, installed from Debian's packages when missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

# program -> the Debian package that provides it.
PROGRAMS = {
    "buildah": "buildah",
    "runc": "runc",
    "mmdebstrap": "mmdebstrap",
    "umoci": "umoci",
}

# The OCI runtime of build and smoke-test containers: Debian's runc, by path, so that
# another runc on the PATH (a node's newer one) changes nothing here. (Debian's crun 1.8
# refuses a hybrid cgroup host, v1 controllers beside a unified v2 mount with a controller
# in it, as on these machines.)
RUNTIME = "/usr/sbin/runc"


class ImageError(RuntimeError):
    """The image could not be built or run here; the message says why."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def ensure_programs(*names: str) -> None:
    """Install the Debian packages of the missing ``names`` (root and apt-get needed)."""
    missing = sorted({PROGRAMS[n] for n in names if shutil.which(n) is None})
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ImageError(
            f"the image build needs {', '.join(missing)} (Debian packages); install them as "
            "root with apt-get, or run as root on Debian"
        )
    log(f"image: installing {' '.join(missing)} from Debian")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    if subprocess.run(install, env=env, stdout=sys.stderr, check=False).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, stdout=sys.stderr, check=True)
        subprocess.run(install, env=env, stdout=sys.stderr, check=True)


def buildah(*args: str, capture: bool = False, check: bool = True) -> str:
    """Run buildah; its stdout when ``capture`` (else it goes to stderr, like its logs)."""
    done = subprocess.run(
        ["buildah", *args],
        stdout=subprocess.PIPE if capture else sys.stderr,
        text=True,
        check=False,
    )
    if check and done.returncode != 0:
        raise ImageError(f"buildah {' '.join(args)} exited with {done.returncode}")
    return done.stdout or ""


def image_exists(name: str) -> bool:
    done = subprocess.run(
        ["buildah", "inspect", "--type", "image", "--format", "{{.FromImageID}}", name],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.returncode == 0
