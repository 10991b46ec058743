"""Unit tests of the local control-plane launcher: certificates, ports, errors.

No Kubernetes binaries needed: where a process must run, tiny shell scripts stand in.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import devenv as lc
from devenv.probes import summarize


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def fake_bin_dir(tmp_path: Path, etcd_script: str = "exec sleep 60\n") -> Path:
    """A bin dir whose etcd is ``etcd_script``; the other binaries must not be reached."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {
        "etcd": etcd_script,
        "kube-apiserver": "echo 'fake apiserver must not run' >&2; exit 3\n",
        "kube-controller-manager": "echo 'fake controller-manager must not run' >&2; exit 3\n",
    }
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)
    return bin_dir


# -- ports --------------------------------------------------------------------------------


def test_free_port_can_be_bound() -> None:
    port = lc.free_port()
    assert 0 < port < 65536
    lc.ensure_port_free(port, "test")


def test_port_in_use_is_a_clear_error(busy_port: int) -> None:
    with pytest.raises(lc.ControlPlaneError) as err:
        lc.ensure_port_free(busy_port, "kube-apiserver secure port")
    message = str(err.value)
    assert f"port {busy_port}" in message
    assert "already in use" in message
    assert "kube-apiserver secure port" in message
    assert "\n" not in message


def test_start_on_a_busy_port_fails_before_starting_anything(
    tmp_path: Path, busy_port: int
) -> None:
    plane = lc.ControlPlane(tmp_path / "state", fake_bin_dir(tmp_path), port=busy_port)
    with pytest.raises(lc.ControlPlaneError, match=f"port {busy_port} .* already in use"):
        plane.start(timeout=5)
    assert not plane.running
    assert lc.read_pids(tmp_path / "state") is None


def test_cli_prints_one_line_error_and_exits_1(
    tmp_path: Path, busy_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    # --node no: a unit test never builds, locks or starts this machine's node (on a machine
    # whose node was never built, the default `auto` built it here first)
    argv = ["up", "--state-dir", str(tmp_path / "s"), "--bin-dir", str(fake_bin_dir(tmp_path))]
    rc = lc.main([*argv, "--node", "no", "--port", str(busy_port)])
    assert rc == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("localcluster: error: port ")
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_process_reporting_address_in_use_is_a_port_error(tmp_path: Path) -> None:
    script = "echo 'listen tcp 127.0.0.1:2379: bind: address already in use' >&2; exit 1\n"
    plane = lc.ControlPlane(tmp_path / "state", fake_bin_dir(tmp_path, script))
    with pytest.raises(
        lc.ControlPlaneError, match=r"etcd could not listen: port .* already in use"
    ):
        plane.start(timeout=10)


# -- readiness, stop ----------------------------------------------------------------------


def test_readiness_timeout_shows_log_tail_and_stops_the_process(tmp_path: Path) -> None:
    script = "echo 'fake etcd says hello'\nexec sleep 60\n"
    plane = lc.ControlPlane(tmp_path / "state", fake_bin_dir(tmp_path, script))
    pids: list[int] = []
    real_write_pids = plane._write_pids

    def record() -> None:
        real_write_pids()
        pids.extend(p.pid for p in plane._procs)

    plane._write_pids = record  # type: ignore[method-assign]
    with pytest.raises(lc.ControlPlaneError) as err:
        plane.start(timeout=1)
    message = str(err.value)
    assert "etcd /health not ready within 1 s" in message
    assert "fake etcd says hello" in message
    assert pids
    assert not any(lc.pid_alive(pid) for pid in pids)
    assert lc.read_pids(tmp_path / "state") is None


def test_missing_binaries_are_reported(tmp_path: Path) -> None:
    (tmp_path / "etcd").touch(0o755)
    with pytest.raises(lc.ControlPlaneError, match="kube-apiserver is missing"):
        lc.ControlPlane(tmp_path / "state", tmp_path).start()


def test_build_failure_propagates_the_scripts_last_line(tmp_path: Path) -> None:
    script = tmp_path / "build.sh"
    script.write_text(
        "echo 'controlplane: some progress' >&2\n"
        "echo 'controlplane: Go is not installed: install Go 1.26 or newer' >&2\n"
        "exit 1\n"
    )
    with pytest.raises(lc.ControlPlaneError) as err:
        lc.build_binaries(script)
    assert str(err.value) == (
        "building the control plane failed: Go is not installed: install Go 1.26 or newer"
    )


def test_build_success_returns_last_stdout_line(tmp_path: Path) -> None:
    script = tmp_path / "build.sh"
    script.write_text("echo noise\necho /some/bin/dir\n")
    assert lc.build_binaries(script) == Path("/some/bin/dir")


def test_readyz_answer_is_summarised() -> None:
    body = b"[+]ping ok\n[-]poststarthook/rbac/bootstrap-roles failed: reason withheld\n"
    assert summarize(body) == "failed checks: poststarthook/rbac/bootstrap-roles"


def test_status_of_an_empty_state_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert lc.main(["status", "--state-dir", str(tmp_path)]) == 3
    assert "not running" in capsys.readouterr().out
    assert lc.main(["down", "--state-dir", str(tmp_path)]) == 0


def test_stop_pid_ignores_a_recycled_pid() -> None:
    # Our own pid is alive but is not the recorded executable: it must not be signalled.
    assert not lc.pid_alive(os.getpid(), "/nonexistent/etcd")
    lc.stop_pid(os.getpid(), "/nonexistent/etcd")


# -- certificates and kubeconfigs ---------------------------------------------------------


def test_serving_certificate() -> None:
    ca = lc.CertificateAuthority.create()
    cert, _ = ca.issue(
        "kube-apiserver", dns_names=["localhost"], ip_addresses=["127.0.0.1"], server=True
    )
    cert.verify_directly_issued_by(ca.cert)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_client_certificate_carries_user_and_groups() -> None:
    ca = lc.CertificateAuthority.create()
    cert, _ = ca.issue("alice", organizations=["readers", "system:masters"])
    cert.verify_directly_issued_by(ca.cert)
    subject = cert.subject
    assert [a.value for a in subject.get_attributes_for_oid(NameOID.COMMON_NAME)] == ["alice"]
    orgs = [a.value for a in subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert orgs == ["readers", "system:masters"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_ca_round_trips_through_files(tmp_path: Path) -> None:
    ca = lc.CertificateAuthority.create()
    ca.save(tmp_path / "ca.crt", tmp_path / "ca.key")
    assert (tmp_path / "ca.key").stat().st_mode & 0o077 == 0
    loaded = lc.CertificateAuthority.load(tmp_path / "ca.crt", tmp_path / "ca.key")
    cert, _ = loaded.issue("bob")
    cert.verify_directly_issued_by(ca.cert)


def test_kubeconfig_embeds_credentials() -> None:
    text = lc.build_kubeconfig(
        server="https://127.0.0.1:6443",
        ca_pem=b"CA",
        cert_pem=b"CERT",
        key_pem=b"KEY",
        user="alice",
    )
    config = json.loads(text)
    assert config["current-context"] == "vectorschema-local"
    assert config["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"
    user = config["users"][0]
    assert user["name"] == "alice"
    assert base64.b64decode(user["user"]["client-key-data"]) == b"KEY"


def test_user_kubeconfig_needs_a_started_plane(tmp_path: Path) -> None:
    with pytest.raises(lc.ControlPlaneError, match="not been started"):
        lc.ControlPlane(tmp_path).user_kubeconfig("alice", ["readers"])


def test_export_line() -> None:
    line = lc.export_line(Path("/abs/admin.kubeconfig"))
    assert (
        line == f"export KUBECONFIG=/abs/admin.kubeconfig PATH={Path(sys.executable).parent}:$PATH"
    )
