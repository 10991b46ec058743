"""The base image the Dockerfile names, ``debian:bookworm-slim``, made from Debian's packages.

No image registry is reachable here, so when buildah's storage has no
``docker.io/library/debian:bookworm-slim`` this module makes one the way the official
image is made (debuerreotype): a ``minbase`` bootstrap of bookworm (with its updates and
security suites) by mmdebstrap, slimmed like the official ``-slim`` variant (dpkg excludes
documentation, manuals and locales, and keeps them out of later installs too; no apt
lists, no caches), one layer, ``PATH`` and ``CMD ["bash"]`` as upstream sets them. It is
committed under the exact name a ``FROM debian:bookworm-slim`` resolves to, so the
Dockerfile builds unchanged, and kept as an OCI archive in the tool cache (making it takes
minutes) keyed by this recipe. A base already in the storage (pulled from a registry
elsewhere) is used as it is.
"""

from __future__ import annotations

import hashlib
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from image.tools import buildah, image_exists, log

NAME = "docker.io/library/debian:bookworm-slim"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://deb.debian.org/debian-security"

# The official image's sources (deb822), as it ships them.
SOURCES = f"""\
Types: deb
URIs: {MIRROR}
Suites: {SUITE} {SUITE}-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: {SECURITY_MIRROR}
Suites: {SUITE}-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""

# debuerreotype's slimify: dpkg keeps these out of every package installed now and later.
DPKG_SLIM = """\
# This is the "slim" variant of the Debian base image.
# Many files which are normally unnecessary in containers are excluded,
# and this configuration file keeps them that way.
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
"""

# debuerreotype's minimizing configuration, under the same file names.
CONFIG_FILES = {
    "etc/dpkg/dpkg.cfg.d/docker": DPKG_SLIM,
    "etc/dpkg/dpkg.cfg.d/docker-apt-speedup": "force-unsafe-io\n",
    "etc/apt/apt.conf.d/docker-autoremove-suggests": (
        'Apt::AutoRemove::SuggestsImportant "false";\n'
    ),
    "etc/apt/apt.conf.d/docker-clean": (
        'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb '
        '/var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };\n'
        'APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb '
        '/var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };\n'
        'Dir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\n'
    ),
    "etc/apt/apt.conf.d/docker-gzip-indexes": 'Acquire::GzipIndexes "true";\n',
    "etc/apt/apt.conf.d/docker-no-languages": 'Acquire::Languages "none";\n',
}

# After the bootstrap: no package lists, caches or logs; mmdebstrap's own option files go
# (the files above carry the same settings), and its one-line sources give way to the
# official deb822 file (written by the hook, from the stage directory).
CLEANUP = (
    'rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/cache/ldconfig/*'
    ' "$1"/var/cache/debconf/*-old "$1"/var/lib/dpkg/*-old "$1"/var/log/apt/*'
    ' "$1"/var/log/dpkg.log "$1"/var/log/alternatives.log "$1"/var/log/bootstrap.log'
    ' "$1"/etc/apt/sources.list "$1"/etc/apt/apt.conf.d/99mmdebstrap'
    ' "$1"/etc/dpkg/dpkg.cfg.d/99mmdebstrap'
)

ENV_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def recipe_key() -> str:
    """Changes whenever what this module would build changes."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]


def archive_path(cache: Path) -> Path:
    return cache / f"debian-{SUITE}-slim-{recipe_key()}.oci.tar"


def ensure_base(cache: Path) -> str:
    """``debian:bookworm-slim`` in buildah's storage: present, from the cache, or made now."""
    if image_exists(NAME):
        return NAME
    archive = archive_path(cache)
    if archive.is_file():
        log(f"base: loading {NAME} from {archive}")
        image_id = buildah("pull", "--quiet", f"oci-archive:{archive}", capture=True).split()[-1]
        buildah("tag", image_id, NAME)
        return NAME
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vectorschema-base-", dir=cache) as tmp:
        rootfs_tar = Path(tmp) / "rootfs.tar"
        bootstrap(Path(tmp), rootfs_tar)
        commit(rootfs_tar)
        partial = archive.with_suffix(".partial")
        buildah("push", "--quiet", NAME, f"oci-archive:{partial}:{NAME}", capture=True)
        partial.rename(archive)
    log(f"base: {NAME} made from Debian packages, cached as {archive}")
    return NAME


def bootstrap(tmp: Path, out: Path) -> None:
    """mmdebstrap a slim minbase bookworm into the tarball ``out``."""
    stage = tmp / "config"
    for rel, text in CONFIG_FILES.items():
        path = stage / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    sources = tmp / "debian.sources"
    sources.write_text(SOURCES)
    excludes = [line.split(None, 1) for line in DPKG_SLIM.splitlines() if line.startswith("path-")]
    cmd = [
        "mmdebstrap",
        "--mode=root",
        "--variant=minbase",
        "--format=tar",
        # Merged /usr by directory symlinks, as debootstrap (and so the official image) does
        # it: without it mmdebstrap installs the usrmerge package, which pulls in perl.
        "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
        # Read by mmdebstrap itself while it unpacks the Essential packages.
        *(f"--dpkgopt={kind}={pattern}" for kind, pattern in excludes),
        "--setup-hook=" + f'cp -a {shlex.quote(str(stage))}/. "$1"/',
        "--customize-hook=" + CLEANUP,
        "--customize-hook="
        + f'cp {shlex.quote(str(sources))} "$1"/etc/apt/sources.list.d/debian.sources',
        SUITE,
        str(out),
        f"deb {MIRROR} {SUITE} main",
        f"deb {MIRROR} {SUITE}-updates main",
        f"deb {SECURITY_MIRROR} {SUITE}-security main",
    ]
    log(f"base: bootstrapping Debian {SUITE} (minbase, slim) with mmdebstrap: a few minutes")
    subprocess.run(cmd, check=True, stdout=sys.stderr)


def commit(rootfs_tar: Path) -> None:
    """One layer from the tarball, configured like the official image, named ``NAME``."""
    container = buildah("from", "--pull=never", "scratch", capture=True).strip()
    try:
        buildah("add", container, str(rootfs_tar), "/")
        buildah("config", "--env", ENV_PATH, "--cmd", '["bash"]', container)
        buildah("commit", "--quiet", "--rm", container, NAME, capture=True)
    except BaseException:
        buildah("rm", container, check=False)
        raise
