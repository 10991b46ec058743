"""tools/image's pure parts: what the build key covers, the Dockerfile's stages, and the
agreement between the Dockerfile, .dockerignore and the base image the script makes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from image import ImageError
from image.base import NAME as BASE_NAME
from image.build import CONTEXT_DIRS, CONTEXT_FILES, build_stages, content_key

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for name in CONTEXT_FILES:
        shutil.copy(REPO / name, tmp_path / name)
    pkg = tmp_path / "operator" / "vectorschema"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text('"""x"""\n')
    (pkg / "handlers.py").write_text("A = 1\n")
    return tmp_path


def test_the_key_covers_the_sources_and_the_base(tree: Path) -> None:
    key = content_key("sha256:base", tree)
    assert content_key("sha256:base", tree) == key
    (tree / "operator" / "vectorschema" / "handlers.py").write_text("A = 2\n")
    changed = content_key("sha256:base", tree)
    assert changed != key
    assert content_key("sha256:other-base", tree) != changed
    (tree / "Dockerfile").write_text((tree / "Dockerfile").read_text() + "\n# edit\n")
    assert content_key("sha256:base", tree) != changed


def test_the_key_ignores_what_the_build_context_leaves_out(tree: Path) -> None:
    key = content_key("sha256:base", tree)
    pkg = tree / "operator" / "vectorschema"
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "handlers.cpython-311.pyc").write_bytes(b"\0")
    (tree / "operator" / "vectorschema.egg-info").mkdir()
    (tree / "operator" / "vectorschema.egg-info" / "PKG-INFO").write_text("x")
    (tree / "tests").mkdir()
    (tree / "tests" / "test_x.py").write_text("")
    assert content_key("sha256:base", tree) == key


def test_dockerignore_admits_exactly_what_the_key_covers() -> None:
    lines = [ln for ln in (REPO / ".dockerignore").read_text().splitlines() if ln.strip()]
    admitted = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    assert "*" in lines
    assert admitted == (set(CONTEXT_FILES) | set(CONTEXT_DIRS)) - {"Dockerfile", ".dockerignore"}


def test_stages_before_the_last_are_named(tmp_path: Path) -> None:
    assert build_stages(REPO / "Dockerfile") == ["build"]
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM a AS one\nRUN x\nfrom b as two\nFROM c\n")
    assert build_stages(dockerfile) == ["one", "two"]
    dockerfile.write_text("FROM a\nFROM c\n")
    with pytest.raises(ImageError, match="name every stage"):
        build_stages(dockerfile)


def test_the_dockerfile_names_the_base_the_script_makes_and_a_numeric_user() -> None:
    lines = (REPO / "Dockerfile").read_text().splitlines()
    bases = {ln.split()[1] for ln in lines if ln.startswith("FROM ")}
    assert {f"docker.io/library/{b}" for b in bases} == {BASE_NAME}
    users = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert users == ["10001:10001"]
