"""The operator image, built from the repository's Dockerfile (``make image``), run without a
node: under runc, as the chart runs it (numeric user, read-only root, a tmpfs at /tmp, no
capabilities, no network).

The first test builds the image or reuses the cached one (tools/image): a cold build makes
the Debian base first, a few minutes on two cores.
"""

from __future__ import annotations

import json
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.helm import by_kind, render

from image import BuiltImage, build_image
from image.run import Result, Unpacked, numeric_user, run, tree_size, unpacked

pytestmark = pytest.mark.timeout(1800)

REPO = Path(__file__).resolve().parents[2]

# Size bounds, measured 2026-12-04: archive 98.7 MB (gzip), unpacked 321 MB. The unpacked
# image is Debian's slim base (77 MB), Python 3.11 (about 35 MB) and the virtualenv (about
# 210 MB: kubernetes' client 58, numpy 56, grpc 19, cryptography 16, ...). The bounds leave
# room for dependency updates; the kubernetes.aio twin (68 MB unpacked) or a compiler
# toolchain coming back crosses them.
MAX_ARCHIVE_BYTES = 115_000_000
MAX_UNPACKED_BYTES = 370_000_000

NO_CLUSTER = r"No configuration found"


@pytest.fixture(scope="module")
def built() -> BuiltImage:
    return build_image()


@pytest.fixture(scope="module")
def image(built: BuiltImage) -> Iterator[Unpacked]:
    with unpacked(built.archive) as img:
        yield img


def sh(image: Unpacked, script: str, **kwargs: Any) -> Result:
    return run(image, ["/bin/sh", "-c", script], **kwargs)


def test_archive_is_named_for_the_chart(built: BuiltImage) -> None:
    """The OCI archive names the image in full: `ctr images import` keeps that name."""
    with tarfile.open(built.archive) as tar:
        member = tar.extractfile("index.json")
        assert member is not None
        index = json.load(member)
    refs = [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]
    assert refs == [built.name]
    assert re.fullmatch(r"localhost/vectorschema:0\.1\.0-[0-9a-f]{12}", built.name)


def test_runs_as_a_numeric_non_root_user_on_a_read_only_root(image: Unpacked) -> None:
    assert numeric_user(image.config) == (10001, 10001)
    done = sh(
        image,
        "id -u; id -g; python -c 'import getpass, sys; print(getpass.getuser(), "
        "sys.dont_write_bytecode)'; touch /opt/vectorschema/x; touch /tmp/x && echo tmp-writable",
    )
    lines = done.output.splitlines()
    assert lines[:3] == ["10001", "10001", "vectorschema True"], done.output
    assert "/opt/vectorschema/x': Read-only file system" in done.output
    assert "tmp-writable" in done.output


def test_every_operator_module_imports(image: Unpacked) -> None:
    """Every module of the package (not just the entry points), with the pinned kopf."""
    script = (
        "import importlib, pkgutil, vectorschema\n"
        "names = [m.name for m in pkgutil.walk_packages(vectorschema.__path__, 'vectorschema.')]\n"
        "for name in names: importlib.import_module(name)\n"
        "print(len(names), 'modules')\n"
    )
    done = run(image, ["python", "-c", script])
    assert done.returncode == 0, done.output
    count = int(done.output.split()[-2])
    assert count == len(list((REPO / "operator" / "vectorschema").rglob("*.py"))) - 1
    done = run(image, ["kopf", "--version"])
    assert done.returncode == 0 and done.output.strip() == "kopf, version 1.45.2", done.output
    done = run(image, ["vectorschema", "--help"])
    assert done.returncode == 0 and "usage: vectorschema" in done.output, done.output


def test_the_image_command_reports_that_there_is_no_cluster(image: Unpacked) -> None:
    """Its CMD starts the operator, which says clearly that it has no cluster to talk to
    (and keeps retrying), and writes nowhere it may not."""
    done = run(image, until=NO_CLUSTER, timeout=180)
    assert done.returncode is None, done.output
    assert "Invalid kube-config file. No configuration found." in done.output
    assert "Read-only file system" not in done.output
    assert "Permission denied" not in done.output


def test_the_charts_command_runs_in_the_image(image: Unpacked) -> None:
    """The Deployment's own command and environment (`/bin/sh -c 'exec kopf run ...'`, with
    `python` drawing the peering priority) get as far as looking for the cluster."""
    docs = render({"image": {"repository": "localhost/vectorschema", "tag": "dev"}})
    (container,) = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value", "vectorschema-system") for e in container["env"]}
    done = run(image, [*container["command"], *container["args"]], env=env, until=NO_CLUSTER)
    assert done.returncode is None, done.output
    assert "not found" not in done.output.replace(NO_CLUSTER, ""), done.output


def test_no_compilers_no_pip_no_caches(image: Unpacked) -> None:
    done = sh(image, "for p in gcc cc c++ g++ make ld as pip pip3; do command -v $p; done; :")
    assert done.returncode == 0 and done.output == "", done.output
    done = run(image, ["python", "-m", "pip", "--version"])
    assert done.returncode != 0 and "No module named pip" in done.output, done.output
    root = image.rootfs
    leftovers = [
        *root.glob("var/lib/apt/lists/*_*"),
        *root.glob("var/cache/apt/*.bin"),
        *root.glob("var/cache/apt/archives/*.deb"),
        *root.glob("root/.cache/*"),
        *root.glob("tmp/*"),
        *root.glob("etc/pip*"),
        *root.glob("opt/vectorschema/lib/python3*/site-packages/pip"),
        *root.glob("opt/vectorschema/lib/python3*/site-packages/*/tests"),
    ]
    assert leftovers == []


def test_bytecode_is_compiled_with_hashes(image: Unpacked) -> None:
    """Compiled at build time (the root is read-only at run time, and compiling at every
    start costs seconds), checked by hash, not by the timestamps a copy may change: the
    operator's imports read bytecode and compile no source."""
    done = run(
        image, ["python", "-c", "import vectorschema.k8s.handlers"], env={"PYTHONVERBOSE": "1"}
    )
    assert done.returncode == 0, done.output
    from_bytecode = re.findall(
        r"^# code object from '(/opt/vectorschema/\S+\.pyc)'", done.output, re.M
    )
    from_source = re.findall(r"^# code object from (/\S+\.py)$", done.output, re.M)
    assert len(from_bytecode) > 500 and from_source == []
    pyc = (image.rootfs / from_bytecode[0].lstrip("/")).read_bytes()
    assert int.from_bytes(pyc[4:8], "little") == 0b01  # hash-based, source not checked


def test_size_is_within_bounds(built: BuiltImage, image: Unpacked) -> None:
    archive = built.archive.stat().st_size
    unpacked_size = tree_size(image.rootfs)
    print(
        f"image {built.name}: archive {archive / 1e6:.1f} MB, unpacked {unpacked_size / 1e6:.1f} MB"
    )
    assert archive < MAX_ARCHIVE_BYTES
    assert unpacked_size < MAX_UNPACKED_BYTES
