"""The node's host network, and the rule that no packet leaves this machine.

The local node's Pods live on a bridge that this module creates (:data:`BRIDGE`), in
network namespaces that containerd creates for the project (CNI ``bridge`` plugin). Three
things keep every packet of theirs on this machine:

- The Service range gets a host route of type ``local`` (``ip route add local
  <service-range> dev lo table local``). A connection to a ClusterIP that kube-proxy's DNAT
  rewrites still reaches its Pod (DNAT re-routes it); one that no rule rewrites is
  delivered to the host itself and refused, instead of following the default route out of
  the machine. (A ``blackhole`` route would break the host's own connections to
  ClusterIPs: the route lookup at ``connect()`` fails before the OUTPUT DNAT runs.)
- IP forwarding (which the bridge needs) and kube-proxy's masquerading would let a Pod
  reach past the machine, so a FORWARD rule (chain :data:`GUARD_CHAIN`, first in
  ``FORWARD``) drops traffic from the bridge or the Pod range to any destination outside
  the Pod and Service ranges.
- No DNS: Pods get a resolv.conf whose only nameserver is their own loopback, so a name
  never falls through to the host's resolver (tests give Pods IP addresses).

Rules are set with the host's own ``iptables`` (legacy or nft, whichever the alternatives
choose): kube-proxy calls the same binary, so both land in the same backend.

:func:`up` is run by :class:`devenv.node.Node` before the API server starts (the API server
binds the bridge's gateway address); :func:`down` removes all of it, idempotently, and also
every ``KUBE-*``/``CNI-*`` chain kube-proxy, the kubelet or the CNI plugins left.
"""

from __future__ import annotations

import ipaddress
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from devenv.errors import ControlPlaneError

#: The Service range, shared with the API server's ``--service-cluster-ip-range``. A /24
#: of 10/8 that no route of this machine uses (checked at start by :func:`check_free`);
#: 10.0.0.1 is the ``kubernetes`` Service.
SERVICE_CIDR = "10.0.0.0/24"
#: The Pod range: one /24 for the one node, on the bridge, disjoint from the Service range
#: and from every route of the host (checked at start). Nothing outside this machine is
#: ever addressed: the range exists only on :data:`BRIDGE`.
POD_CIDR = "10.244.0.0/24"
#: The bridge's own address: the Pods' gateway, the node's InternalIP, and the address the
#: API server binds and advertises when a node runs. Pods cannot use 127.0.0.1 (their
#: loopback is their own), and the ``kubernetes`` Service's endpoint may not be a loopback
#: address; this one is on the host, reachable from the host and from every Pod, and from
#: nowhere else.
GATEWAY = "10.244.0.1"
BRIDGE = "vsnode0"
GUARD_CHAIN = "VECTORSCHEMA-NODE-GUARD"
#: Global sysctls that the node (we, the kubelet, kube-proxy) may change: saved before the
#: first start and restored by the clean-up.
SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/bridge/bridge-nf-call-iptables",
    "net/ipv4/conf/all/route_localnet",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
#: Chain prefixes of kube-proxy, the kubelet, the CNI plugins and ours.
OUR_CHAIN_PREFIXES = ("KUBE-", "CNI-", "VECTORSCHEMA-")
TABLES = ("filter", "nat", "mangle")


def run(args: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a host command; with ``check``, a failure raises with its output."""
    proc = subprocess.run(list(args), capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise ControlPlaneError(
            f"{' '.join(args)} failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()}"
        )
    return proc


def iptables_binary(ipv6: bool = False) -> str | None:
    return shutil.which("ip6tables" if ipv6 else "iptables")


# -- sysctls ------------------------------------------------------------------------------


def read_sysctls() -> dict[str, str]:
    out = {}
    for name in SYSCTLS:
        try:
            out[name] = (Path("/proc/sys") / name).read_text().strip()
        except OSError:
            continue
    return out


def write_sysctl(name: str, value: str) -> None:
    try:
        (Path("/proc/sys") / name).write_text(value + "\n")
    except OSError as exc:
        raise ControlPlaneError(f"cannot set {name.replace('/', '.')}={value}: {exc}") from None


def restore_sysctls(saved: dict[str, str]) -> None:
    for name, value in saved.items():
        try:
            current = (Path("/proc/sys") / name).read_text().strip()
            if current != value:
                (Path("/proc/sys") / name).write_text(value + "\n")
        except OSError:
            continue


# -- set-up -------------------------------------------------------------------------------


def check_free() -> None:
    """Refuse if a route of this host (other than ours) overlaps the Pod or Service range."""
    ours = {ipaddress.ip_network(POD_CIDR), ipaddress.ip_network(SERVICE_CIDR)}
    for table in ("main", "local"):
        for line in run(["ip", "-4", "route", "show", "table", table]).stdout.splitlines():
            words = line.split()
            if not words:
                continue
            dest = words[1] if words[0] in ("local", "broadcast", "unicast") else words[0]
            if dest == "default" or f"dev {BRIDGE}" in line:
                continue
            if words[0] == "local" and dest == SERVICE_CIDR:
                continue
            try:
                net = ipaddress.ip_network(dest, strict=False)
            except ValueError:
                continue
            for mine in ours:
                if net.overlaps(mine) and not net.is_loopback:
                    raise ControlPlaneError(
                        f"the host route {line.strip()!r} overlaps the node's range {mine}: "
                        "the node's ranges must exist only on this machine"
                    )


def up() -> None:
    """Bridge with the gateway address, forwarding, the local Service route, the guard."""
    check_free()
    if run(["ip", "link", "show", BRIDGE], check=False).returncode != 0:
        run(["ip", "link", "add", BRIDGE, "type", "bridge"])
    prefix = POD_CIDR.split("/")[1]
    if GATEWAY not in run(["ip", "-4", "addr", "show", "dev", BRIDGE]).stdout:
        run(["ip", "addr", "add", f"{GATEWAY}/{prefix}", "dev", BRIDGE])
    run(["ip", "link", "set", BRIDGE, "up"])
    write_sysctl("net/ipv4/ip_forward", "1")
    if Path("/proc/sys/net/bridge/bridge-nf-call-iptables").exists():
        # Pod-to-Service traffic between two Pods of the bridge must pass kube-proxy's DNAT.
        write_sysctl("net/bridge/bridge-nf-call-iptables", "1")
    if not local_route_present():
        run(["ip", "route", "add", "local", SERVICE_CIDR, "dev", "lo", "table", "local"])
    install_guard()


def install_guard() -> None:
    """FORWARD: from the bridge or the Pod range, only to the Pod and Service ranges."""
    ipt = iptables_binary()
    if ipt is None:
        raise ControlPlaneError("iptables is not installed (tools/node/build.sh installs it)")
    remove_guard()
    run([ipt, "-w", "-N", GUARD_CHAIN])
    for dest in (POD_CIDR, SERVICE_CIDR):
        run([ipt, "-w", "-A", GUARD_CHAIN, "-d", dest, "-j", "RETURN"])
    comment = ["-m", "comment", "--comment", "vectorschema node: no packet leaves this machine"]
    run([ipt, "-w", "-A", GUARD_CHAIN, *comment, "-j", "DROP"])
    run([ipt, "-w", "-I", "FORWARD", "1", "-s", POD_CIDR, "-j", GUARD_CHAIN])
    run([ipt, "-w", "-I", "FORWARD", "1", "-i", BRIDGE, "-j", GUARD_CHAIN])


def remove_guard() -> None:
    ipt = iptables_binary()
    if ipt is None:
        return
    for match in (["-i", BRIDGE], ["-s", POD_CIDR]):
        while (
            run([ipt, "-w", "-D", "FORWARD", *match, "-j", GUARD_CHAIN], check=False).returncode
            == 0
        ):
            pass
    run([ipt, "-w", "-F", GUARD_CHAIN], check=False)
    run([ipt, "-w", "-X", GUARD_CHAIN], check=False)


# -- inspection (tests) -------------------------------------------------------------------


def local_route_present() -> bool:
    out = run(["ip", "route", "show", "table", "local", "type", "local", SERVICE_CIDR]).stdout
    return bool(out.strip())


def route_type(address: str) -> str:
    """The first word of ``ip route get ADDRESS`` (``local`` for the Service range). Only
    asks the kernel's routing table: no packet is sent."""
    out = run(["ip", "-4", "route", "get", address]).stdout.split()
    return out[0] if out else ""


def forward_rules() -> list[str]:
    """``iptables -S FORWARD``, in order."""
    ipt = iptables_binary()
    if ipt is None:
        return []
    return [
        ln
        for ln in run([ipt, "-w", "-S", "FORWARD"], check=False).stdout.splitlines()
        if ln.startswith("-A")
    ]


def guard_rules() -> list[str]:
    """``iptables -S`` lines of the guard chain and of FORWARD's jumps to it."""
    ipt = iptables_binary()
    if ipt is None:
        return []
    lines = run([ipt, "-w", "-S", "FORWARD"], check=False).stdout.splitlines()
    lines += run([ipt, "-w", "-S", GUARD_CHAIN], check=False).stdout.splitlines()
    return [ln for ln in lines if GUARD_CHAIN in ln]


# -- tear-down ----------------------------------------------------------------------------


def remove_chains(prefixes: Sequence[str] = OUR_CHAIN_PREFIXES) -> None:
    """Delete every jump to a chain named with one of ``prefixes`` from the built-in
    chains, then flush and delete those chains, in every table, IPv4 and IPv6."""
    for ipv6 in (False, True):
        ipt = iptables_binary(ipv6)
        if ipt is None:
            continue
        for table in TABLES:
            listing = run([ipt, "-w", "-t", table, "-S"], check=False)
            if listing.returncode != 0:
                continue
            chains: list[str] = []
            rules = [shlex.split(line) for line in listing.stdout.splitlines()]
            for words in rules:
                if len(words) >= 2 and words[0] == "-N" and words[1].startswith(tuple(prefixes)):
                    chains.append(words[1])
            for words in rules:
                if len(words) < 2 or words[0] != "-A":
                    continue
                if words[1] in chains:
                    continue
                if any(w in chains for w in words[2:]):
                    run([ipt, "-w", "-t", table, "-D", *words[1:]], check=False)
            for chain in chains:
                run([ipt, "-w", "-t", table, "-F", chain], check=False)
            for chain in chains:
                run([ipt, "-w", "-t", table, "-X", chain], check=False)


def down() -> None:
    """Remove the guard, every KUBE-/CNI- chain, the local route and the bridge."""
    remove_chains()
    while local_route_present():
        if (
            run(
                ["ip", "route", "del", "local", SERVICE_CIDR, "dev", "lo", "table", "local"],
                check=False,
            ).returncode
            != 0
        ):
            break
    if run(["ip", "link", "show", BRIDGE], check=False).returncode == 0:
        run(["ip", "link", "del", BRIDGE], check=False)
