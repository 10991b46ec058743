"""The operator image, built from the repository's Dockerfile by buildah (no daemon).

``build_image()`` returns the OCI archive and the image's name; an unchanged tree is not
rebuilt. The key of a build is a hash of everything that enters it: the Dockerfile,
``.dockerignore``, ``pyproject.toml``, ``README.md`` (the package's metadata), the
sources under ``operator/``, this module, and the id of the base image. The archive is
kept in the tool cache, ``~/.cache/vectorschema/image/vectorschema-<version>-<key>.oci.tar``
(``$VECTORSCHEMA_CACHE`` moves it), with the image name ``localhost/vectorschema:<version>-
<key>`` inside (``org.opencontainers.image.ref.name``). buildah's storage also has it
under that name and as ``localhost/vectorschema:dev``.

Build containers use the host's network (``RUN`` steps reach Debian's archive and PyPI,
nothing else is asked of them) and see two read-only files of the host: its CA bundle and a
pip configuration naming it (and the host's ``PIP_INDEX_URL`` if one is set), so that a
TLS-inspecting egress proxy like this workplace's is trusted. Neither is part of the image.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

from image import base
from image.tools import RUNTIME, ImageError, buildah, ensure_programs, log

TOOLS = Path(__file__).resolve().parent.parent
REPO = TOOLS.parent
REPOSITORY = "localhost/vectorschema"
DEV_TAG = "dev"
# Archives (and their names in buildah's storage) kept in the cache: the newest, by use.
KEEP = 6
# What enters the build context (besides the Dockerfile): see .dockerignore.
CONTEXT_FILES = ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md")
CONTEXT_DIRS = ("operator",)
SKIPPED = re.compile(r"(^|/)(__pycache__|[^/]*\.egg-info)(/|$)|\.pyc$")
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# Where build containers see the host's bundle: not at its own path, where the build
# stage's ca-certificates package writes.
CA_IN_BUILD = "/etc/pip-host-ca.crt"


@dataclass(frozen=True)
class BuiltImage:
    archive: Path
    """The OCI archive (``oci-archive`` transport; ``ctr images import`` reads it)."""
    name: str
    """``localhost/vectorschema:<version>-<key>``: the archive's reference name."""
    key: str
    """The content key of the build (part of the tag)."""
    built: bool
    """False when the cached archive was reused."""

    @property
    def repository(self) -> str:
        return self.name.rsplit(":", 1)[0]

    @property
    def tag(self) -> str:
        return self.name.rsplit(":", 1)[1]


def cache_dir() -> Path:
    root = os.environ.get("VECTORSCHEMA_CACHE") or str(Path.home() / ".cache" / "vectorschema")
    return Path(root) / "image"


def version(repo: Path = REPO) -> str:
    with (repo / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def context_files(repo: Path = REPO) -> list[Path]:
    """The files of the build context, sorted (what the key covers)."""
    files = [repo / name for name in CONTEXT_FILES]
    for top in CONTEXT_DIRS:
        for path in sorted((repo / top).rglob("*")):
            rel = path.relative_to(repo).as_posix()
            if path.is_file() and not SKIPPED.search(rel):
                files.append(path)
    return files


def content_key(base_id: str, repo: Path = REPO) -> str:
    digest = hashlib.sha256()
    digest.update(base_id.encode() + b"\0")
    digest.update(Path(__file__).read_bytes() + b"\0")
    for path in context_files(repo):
        digest.update(path.relative_to(repo).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def build_image(repo: Path = REPO, *, force: bool = False) -> BuiltImage:
    """Build (or reuse) the operator image from ``repo``'s Dockerfile.

    One build at a time per cache (a lock file there): worktrees and test sessions that
    build at once wait for each other, then reuse what the first one built.
    """
    if os.geteuid() != 0:
        raise ImageError(
            "building the image here needs root (buildah's root storage, mmdebstrap in root "
            "mode); elsewhere, `docker build .` builds the same Dockerfile"
        )
    ensure_programs("buildah", "runc", "mmdebstrap")
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build(repo, cache, force)


def _build(repo: Path, cache: Path, force: bool) -> BuiltImage:
    base_name = base.ensure_base(cache)
    base_id = buildah(
        "inspect", "--type", "image", "--format", "{{.FromImageID}}", base_name, capture=True
    ).strip()
    key = content_key(base_id, repo)
    name = f"{REPOSITORY}:{version(repo)}-{key}"
    archive = cache / f"vectorschema-{version(repo)}-{key}.oci.tar"
    if archive.is_file() and not force:
        log(f"image: {name} is up to date ({archive})")
        archive.touch()
        return BuiltImage(archive=archive, name=name, key=key, built=False)
    log(f"image: building {name} from {repo / 'Dockerfile'}")
    common = [
        "bud",
        "--pull=never",
        "--layers",
        "--network=host",
        f"--runtime={RUNTIME}",
        "--format=oci",
        "--file",
        str(repo / "Dockerfile"),
    ]
    # First the stages before the last, with the host's CA bundle and pip configuration
    # mounted (buildah leaves an empty file where a volume was mounted, so they must not be
    # mounted while the final stage runs); then the whole file, which finds those stages in
    # the layer cache, and whose own steps need only Debian's archive.
    with tempfile.TemporaryDirectory(prefix="vectorschema-image-") as tmp:
        for stage in build_stages(repo / "Dockerfile"):
            buildah(*common, *host_mounts(Path(tmp)), "--target", stage, str(repo))
    buildah(*common, "--tag", name, "--tag", f"{REPOSITORY}:{DEV_TAG}", str(repo))
    partial = archive.with_name(archive.name + ".partial")
    partial.unlink(missing_ok=True)
    buildah("push", "--quiet", name, f"oci-archive:{partial}:{name}")
    partial.rename(archive)
    prune(cache)
    return BuiltImage(archive=archive, name=name, key=key, built=True)


def prune(cache: Path, keep: int = KEEP) -> None:
    """Drop all but the ``keep`` most recently used archives, and their names in storage."""
    archives = sorted(
        cache.glob("vectorschema-*.oci.tar"), key=lambda p: p.stat().st_mtime, reverse=True
    )
    for old in archives[keep:]:
        tag = old.name.removeprefix("vectorschema-").removesuffix(".oci.tar")
        buildah("rmi", f"{REPOSITORY}:{tag}", check=False, capture=True)
        old.unlink(missing_ok=True)


def build_stages(dockerfile: Path) -> list[str]:
    """The names of the stages before the last (``FROM ... AS <name>``)."""
    stages: list[str | None] = []
    for line in dockerfile.read_text().splitlines():
        words = line.split()
        if words and words[0].upper() == "FROM":
            named = len(words) >= 4 and words[-2].upper() == "AS"
            stages.append(words[-1] if named else None)
    unnamed = [i for i, st in enumerate(stages[:-1]) if st is None]
    if unnamed:
        raise ImageError(f"{dockerfile}: name every stage before the last (FROM ... AS name)")
    return [st for st in stages[:-1] if st is not None]


def host_mounts(tmp: Path) -> list[str]:
    """``--volume`` options: the host's CA bundle and a pip configuration that names it."""
    ca = os.environ.get("PIP_CERT") or CA_BUNDLE
    if not Path(ca).is_file():
        return []
    conf = ["[global]", f"cert = {CA_IN_BUILD}"]
    if os.environ.get("PIP_INDEX_URL"):
        conf.append(f"index-url = {os.environ['PIP_INDEX_URL']}")
    pip_conf = tmp / "pip.conf"
    pip_conf.write_text("\n".join(conf) + "\n")
    return [f"--volume={ca}:{CA_IN_BUILD}:ro", f"--volume={pip_conf}:/etc/pip.conf:ro"]
