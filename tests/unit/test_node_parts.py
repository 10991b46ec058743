"""The pure parts of the local node: host checks, OCI archives, component configuration."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pytest

from devenv import network, nodeconfig, nodehost, ociimage


def test_a_host_without_root_cannot_run_a_node(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nodehost.os, "geteuid", lambda: 1000)
    reason = nodehost.cannot_run_node()
    assert reason is not None and "root" in reason


def test_a_host_without_cgroups_cannot_run_a_node(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(nodehost.os, "geteuid", lambda: 0)
    monkeypatch.setattr(nodehost, "CGROUP_ROOT", tmp_path)
    reason = nodehost.cannot_run_node()
    assert reason is not None and "cgroups" in reason


def test_oci_archive_is_a_valid_layout_with_the_name_ctr_reads(tmp_path: Path) -> None:
    binary = tmp_path / "tool"
    binary.write_bytes(b"\x7fELF not really")
    out = tmp_path / "img.oci.tar"
    digest = ociimage.write_archive(out, "vectorschema.local/tool:7", {"tool": binary}, ["/tool"])
    with tarfile.open(out) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    for name, data in files.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]
    index = json.loads(files["index.json"])
    entry = index["manifests"][0]
    assert entry["digest"] == digest
    assert entry["annotations"]["io.containerd.image.name"] == "vectorschema.local/tool:7"
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "7"
    manifest = json.loads(files["blobs/sha256/" + digest.split(":")[1]])
    config = json.loads(files["blobs/sha256/" + manifest["config"]["digest"].split(":")[1]])
    assert config["config"]["Entrypoint"] == ["/tool"]
    # Reproducible: the same input gives the same image.
    again = ociimage.write_archive(
        tmp_path / "again.tar", "vectorschema.local/tool:7", {"tool": binary}, ["/tool"]
    )
    assert again == digest


def test_pods_get_no_default_route_and_no_masquerade(tmp_path: Path) -> None:
    conf = nodeconfig.cni_conflist(nodeconfig.NodePaths(tmp_path))
    bridge = conf["plugins"][0]
    assert bridge["bridge"] == network.BRIDGE and bridge["ipMasq"] is False
    assert bridge["ipam"]["routes"] == [{"dst": network.SERVICE_CIDR}]
    assert "isDefaultGateway" not in bridge


def test_the_ranges_are_disjoint_and_the_gateway_is_in_the_pod_range() -> None:
    import ipaddress

    pods, services = (
        ipaddress.ip_network(network.POD_CIDR),
        ipaddress.ip_network(network.SERVICE_CIDR),
    )
    assert not pods.overlaps(services)
    assert ipaddress.ip_address(network.GATEWAY) in pods


def test_kube_proxy_changes_no_global_sysctl() -> None:
    conf = nodeconfig.kube_proxy_config(Path("/k"))
    assert conf["iptables"]["localhostNodePorts"] is False
    assert conf["conntrack"]["maxPerCore"] == 0 and conf["conntrack"]["min"] == 0
    assert conf["mode"] == "iptables"


def test_images_dir_is_the_one_build_sh_fills() -> None:
    import subprocess

    from devenv.paths import TOOLS

    script = TOOLS / "node" / "build.sh"
    line = next(ln for ln in script.read_text().splitlines() if ln.startswith("IMAGES_HASH="))
    out = subprocess.run(
        ["bash", "-c", f'HERE={TOOLS / "node"}; {line}; echo "$IMAGES_HASH"'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert nodeconfig.images_dir(Path("/b")) == Path(f"/b/images-{out}")
