"""The `vectorschema` command: plans for CI, and the seed's reconfigure call, declaratively.

`vectorschema plan -f FILE` prints what the operator would do to Qdrant for the
Namespace and Plugin manifests in FILE, without a cluster: a GitOps pipeline runs it on a
pull request (exit 0: nothing or non-destructive, 2: destructive, 1: invalid input) and
the reviewer pins the printed fingerprint in `spec.confirmPlan`.

`vectorschema reconfigure NAME -n NS --confirm` approves the pending plan once (through
the `vectorschema.dev/confirm` annotation), waits for the operator to apply it, and
prints the seed endpoint's response, key for key.
"""

from __future__ import annotations

import argparse
import atexit
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import yaml
from pydantic import ValidationError

from vectorschema.api import (
    API_VERSION,
    CONFIRM_ANNOTATION,
    NAMESPACE_KIND,
    PLUGIN_KIND,
    ConditionStatus,
    ConditionType,
    NamespaceResource,
    PluginResource,
    PluginSpec,
    describe,
)
from vectorschema.controller.preview import preview
from vectorschema.core.approval import needs_approval
from vectorschema.core.planning import PluginConflict, PluginNotFound, resolve_desired
from vectorschema.core.report import NO_CHANGES_MESSAGE
from vectorschema.k8s import kube
from vectorschema.k8s.connection import cli_target
from vectorschema.qdrant.errors import GatewayError
from vectorschema.qdrant.pool import close_all, connect_to
from vectorschema.qdrant.protocol import QdrantGateway

EXIT_OK, EXIT_INVALID, EXIT_DESTRUCTIVE = 0, 1, 2
#: `reconfigure --wait`: the plan was applied but a backfill Job failed.
EXIT_BACKFILL_FAILED = 3
SEED_KEYS = (
    "namespace_id",
    "status",
    "previous_points_count",
    "vectors_added",
    "vectors_total",
    "collections_to_reprocess",
    "message",
)


class UsageError(Exception):
    """Bad input: printed as one line, exit 1."""


# --- plan -----------------------------------------------------------------------------


MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


def read_sources(path: str, *, recursive: bool = False) -> list[tuple[str, str]]:
    """(name, text) of stdin (`-`), one file, or a directory's manifest files, sorted
    (its subdirectories too with `recursive`, like `kubectl apply -f DIR -R`)."""
    if path == "-":
        try:
            return [("-", sys.stdin.read())]
        except UnicodeDecodeError:
            raise UsageError("-: not UTF-8 text") from None
    root = Path(path)
    files = [root]
    if root.is_dir():
        found = root.rglob("*") if recursive else root.iterdir()
        files = sorted(f for f in found if f.suffix in MANIFEST_SUFFIXES and f.is_file())
        if not files:
            hint = "" if recursive else " (-R reads its subdirectories too)"
            raise UsageError(f"{path}: no {', '.join(MANIFEST_SUFFIXES)} files{hint}")
    sources = []
    for f in files:
        try:
            sources.append((str(f), f.read_text(encoding="utf-8")))
        except UnicodeDecodeError:
            raise UsageError(f"{f}: not UTF-8 text") from None
    return sources


def load_manifests(
    path: str, *, recursive: bool = False
) -> tuple[list[NamespaceResource], dict[str, PluginSpec]]:
    namespaces: list[NamespaceResource] = []
    plugins: dict[str, PluginSpec] = {}
    for source, text in read_sources(path, recursive=recursive):
        try:
            docs = list(yaml.safe_load_all(text))
        except yaml.YAMLError as exc:
            raise UsageError(f"{source}: not valid YAML: {exc}") from None
        for i, doc in enumerate(docs):
            if not isinstance(doc, dict) or doc.get("apiVersion") != API_VERSION:
                continue
            kind = doc.get("kind")
            meta = doc.get("metadata")
            shown = meta.get("name", "?") if isinstance(meta, dict) else "?"
            where = f"{source}: document {i + 1} ({kind} {shown})"
            try:
                if kind == PLUGIN_KIND:
                    plugin = PluginResource.model_validate(doc)
                    plugins[plugin.metadata.name] = plugin.spec
                elif kind == NAMESPACE_KIND:
                    resource = NamespaceResource.model_validate(doc)
                    if resource.metadata.namespace is None:
                        meta = resource.metadata.model_copy(update={"namespace": "default"})
                        resource = resource.model_copy(update={"metadata": meta})
                    namespaces.append(resource)
            except ValidationError as exc:
                raise UsageError(f"{where}: {describe(exc)}") from None
    if not namespaces:
        raise UsageError(f"{path}: no {API_VERSION} Namespace found")
    return namespaces, plugins


def plan_one(
    resource: NamespaceResource, plugins: dict[str, PluginSpec], gateway: QdrantGateway | None
) -> dict[str, Any]:
    try:
        desired = resolve_desired(resource.spec, plugins)
    except (PluginNotFound, PluginConflict) as exc:
        raise UsageError(f"Namespace {resource.owner_id}: {exc}") from None
    try:
        collection = resource.collection_name
    except ValueError as exc:  # a name no Kubernetes object could have, e.g. with '/'
        raise UsageError(
            f"Namespace {resource.owner_id}: metadata.name: {exc}; set spec.collectionName"
        ) from None
    notes: list[str] = []
    if gateway is None:
        notes.append("no Qdrant given (--qdrant-url/--qdrant-path): planned as a new collection")
    seen = preview(resource, desired, gateway)
    if seen.refusal is not None:  # the operator would stall: say so, as invalid input
        refusal = seen.refusal
        raise UsageError(
            f"Namespace {resource.owner_id}: {refusal.field}: {refusal.message}; the operator "
            f"will not change it ({refusal.reason})"
        )
    plan, at_risk = seen.plan, seen.at_risk
    assert plan is not None  # a preview without a refusal has a plan
    status = plan.to_status(at_risk).to_wire()
    return {
        "namespace": resource.kube_namespace,
        "name": resource.metadata.name,
        "collection": collection,
        "changes": not plan.empty,
        "needsConfirmation": needs_approval(plan, resource.spec.strategy),
        **status,
        "notes": list(plan.notes) + notes,
    }


def render_text(plans: list[dict[str, Any]]) -> str:
    lines = []
    for p in plans:
        lines.append(f"Namespace {p['namespace']}/{p['name']} -> collection {p['collection']}")
        if not p["changes"]:
            lines.append(f"  no changes (fingerprint {p['fingerprint']})")
        else:
            kind = "DESTRUCTIVE" if p["needsConfirmation"] else "non-destructive"
            lines.append(f"  plan {p['fingerprint']} ({kind})")
            for a in p["actions"]:
                mark = " [destroys data]" if a.get("destructive") else ""
                target = f" {a['vector']}" if a.get("vector") else ""
                lines.append(f"  - {a['action']}{target}{mark}: {a.get('detail', '')}")
            if p.get("reason"):
                lines.append(f"  why: {p['reason']}")
            if p["needsConfirmation"]:
                lines.append(f"  points at risk: {p.get('pointsAtRisk', 0)}")
                lines.append(
                    f"  approve exactly this plan with  spec.confirmPlan: {p['fingerprint']}"
                )
        lines.extend(f"  note: {n}" for n in p["notes"])
    return "\n".join(lines)


def cmd_plan(args: argparse.Namespace) -> int:
    namespaces, plugins = load_manifests(args.file, recursive=args.recursive)
    gateway: QdrantGateway | None = None
    try:
        target = cli_target(args.qdrant_url, args.qdrant_path)
        if target is not None:
            gateway = connect_to(target)
    except ValueError as exc:  # e.g. an invalid --qdrant-url
        raise UsageError(str(exc)) from None
    if gateway is not None:
        _close_at_exit()
    plans = [plan_one(r, plugins, gateway) for r in namespaces]
    if args.output == "json":
        print(json.dumps(plans if len(plans) > 1 else plans[0], indent=2))
    else:
        print(render_text(plans))
    return EXIT_DESTRUCTIVE if any(p["needsConfirmation"] for p in plans) else EXIT_OK


_closing = False


def _close_at_exit() -> None:
    """Close the Qdrant clients before the interpreter tears down (not from `__del__`,
    which then fails noisily), without closing them under a caller that imported `main`."""
    global _closing
    if not _closing:
        atexit.register(close_all)
        _closing = True


# --- reconfigure ----------------------------------------------------------------------


def seed_response(obj: dict[str, Any]) -> dict[str, Any]:
    """The seed endpoint's response, from a Namespace's status."""
    meta, status = obj["metadata"], obj.get("status") or {}
    last = status.get("lastReconfigure") or {}
    return {
        "namespace_id": f"{meta['namespace']}/{meta['name']}",
        "status": last.get("status", "no_changes_needed"),
        "previous_points_count": last.get("previousPointsCount", status.get("pointsCount", 0)),
        "vectors_added": last.get("vectorsAdded", []),
        "vectors_total": last.get("vectorsTotal", status.get("vectors") or []),
        "collections_to_reprocess": last.get("collectionsToReprocess", []),
        "message": last.get("message", ""),
    }


def no_changes(obj: dict[str, Any]) -> dict[str, Any]:
    meta, status = obj["metadata"], obj.get("status") or {}
    return {
        "namespace_id": f"{meta['namespace']}/{meta['name']}",
        "status": "no_changes_needed",
        "previous_points_count": status.get("pointsCount") or 0,
        "vectors_added": [],
        "vectors_total": status.get("vectors") or [],
        "collections_to_reprocess": [],
        "message": NO_CHANGES_MESSAGE,
    }


def _ready(obj: dict[str, Any]) -> dict[str, Any]:
    conds = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conds if c.get("type") == ConditionType.READY), {})


def _current(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    return bool(status.get("observedGeneration") == obj["metadata"].get("generation"))


def cmd_reconfigure(args: argparse.Namespace) -> int:
    if not args.confirm:
        raise UsageError(
            "reconfigure may delete data; nothing was changed. Re-run with --confirm to approve "
            "the pending plan (see `kubectl describe vns` for what it does)"
        )
    try:
        kube.load_config()
    except Exception as exc:  # no kubeconfig, no in-cluster credentials: one line, no trace
        raise UsageError(f"cannot reach a Kubernetes cluster: {exc}") from None
    deadline = time.monotonic() + args.timeout
    ns, name = args.namespace, args.name

    def fetch() -> dict[str, Any]:
        try:
            return kube.get_namespace(ns, name)
        except kube.NotFound as exc:
            raise UsageError(str(exc)) from None
        except Exception as exc:  # ApiException, connection errors: say it in one line
            reason = getattr(exc, "reason", None) or type(exc).__name__
            raise UsageError(f"cannot read Namespace {ns}/{name}: {reason}") from None

    obj = fetch()
    while not _current(obj) and time.monotonic() < deadline:  # the operator catches up
        time.sleep(0.5)
        obj = fetch()
    plan = (obj.get("status") or {}).get("plan")
    if plan is None:
        ready = _ready(obj)
        if ready.get("status") != ConditionStatus.TRUE:
            raise UsageError(
                f"Namespace {ns}/{name} is not ready ({ready.get('reason', 'Unknown')}): "
                f"{ready.get('message', '')}"
            )
        print(json.dumps(no_changes(obj), indent=2))
        return EXIT_OK
    fingerprint = plan["fingerprint"]
    kube.set_annotation(ns, name, CONFIRM_ANNOTATION, fingerprint)
    try:
        while time.monotonic() < deadline:
            obj = fetch()
            last = (obj.get("status") or {}).get("lastReconfigure") or {}
            applied = _ready(obj).get("status") == ConditionStatus.TRUE
            if last.get("planFingerprint") == fingerprint and applied:
                break
            time.sleep(0.5)
        else:
            obj = {}
    except KeyboardInterrupt:
        _withdraw(ns, name, fingerprint)
        raise
    if obj:
        if not args.wait:
            print(json.dumps(seed_response(obj), indent=2))
            return EXIT_OK
        return _wait_for_backfill(obj, fetch, fingerprint, deadline, args.timeout)
    raise UsageError(
        f"timed out after {args.timeout:.0f} s waiting for the operator to apply plan "
        f"{fingerprint}; {_withdraw(ns, name, fingerprint)}"
    )


def _backfill_of(obj: dict[str, Any], fingerprint: str) -> list[dict[str, Any]]:
    """The status.reprocess entries of the plan `fingerprint`."""
    entries = (obj.get("status") or {}).get("reprocess") or []
    return [dict(e) for e in entries if e.get("planFingerprint") == fingerprint]


def _wait_for_backfill(
    obj: dict[str, Any],
    fetch: Callable[[], dict[str, Any]],
    fingerprint: str,
    deadline: float,
    timeout: float,
) -> int:
    """`--wait`: after the plan, wait until its backfill Jobs ended; print the seed's
    response with `reprocess` (each pair's Job and state) added. Exit 3 if one failed.

    The operator records the plan's Jobs in the same status write that reports the plan,
    so an applied plan without entries has nothing to wait for (reprocess: Manual, or no
    plugin whose vectors it touched)."""
    ended = {"Succeeded", "Failed", "Manual"}
    while True:
        entries = _backfill_of(obj, fingerprint)
        if all(e.get("state") in ended for e in entries):
            break
        if time.monotonic() >= deadline:
            running = ", ".join(f"{e['plugin']} on {e['collection']}" for e in entries)
            raise UsageError(
                f"plan {fingerprint} was applied, but its backfill Jobs did not end within "
                f"{timeout:.0f} s ({running}); they keep running: see `kubectl get vns -o yaml`"
            )
        time.sleep(1.0)
        obj = fetch()
    response = seed_response(obj)
    response["reprocess"] = [
        {
            "collection": e["collection"],
            "plugin": e["plugin"],
            "job": e.get("job"),
            "state": e["state"],
            "attempts": e.get("attempts", 0),
            "message": e.get("message", ""),
        }
        for e in entries
    ]
    print(json.dumps(response, indent=2))
    failed = [e for e in entries if e["state"] == "Failed"]
    return EXIT_BACKFILL_FAILED if failed else EXIT_OK


def _withdraw(ns: str, name: str, fingerprint: str) -> str:
    """Take back the approval annotation this command set, if the operator has not taken
    it yet: left behind, it would approve that plan whenever it comes back (after a revert,
    or an operator back from an outage), long after this command reported failure. The
    removal is guarded by the version read, so it never races the operator's own
    (also guarded) consumption: one of the two wins, the other changes nothing."""
    try:
        obj = kube.get_namespace(ns, name)
        meta = obj.get("metadata") or {}
        if (meta.get("annotations") or {}).get(CONFIRM_ANNOTATION) != fingerprint:
            return (
                "the operator has taken the approval: the plan may still be applying "
                f"(see `kubectl get vns {name} -n {ns}`)"
            )
        kube.set_annotation(ns, name, CONFIRM_ANNOTATION, None, meta.get("resourceVersion"))
    except Exception as exc:  # a conflict, the API server gone: say so, in one line
        reason = getattr(exc, "reason", None) or type(exc).__name__
        return (
            f"the approval could not be withdrawn ({reason}): remove the annotation "
            f"{CONFIRM_ANNOTATION} by hand unless the plan should still run"
        )
    return f"the approval was withdrawn (annotation {CONFIRM_ANNOTATION} removed)"


# --- entry point ----------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on a usage error, which `plan` uses for "destructive": a CI job
    must not read a mistyped flag as a plan awaiting approval. Usage errors exit 1."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_INVALID, f"{self.prog}: error: {message}\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="vectorschema", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    plan = sub.add_parser("plan", help="print the plan for Namespace/Plugin manifests")
    plan.add_argument(
        "-f", "--file", required=True, help="manifest file or directory ('-' for stdin)"
    )
    plan.add_argument(
        "-R", "--recursive", action="store_true", help="with a directory: its subdirectories too"
    )
    where = plan.add_mutually_exclusive_group()
    where.add_argument("--qdrant-url", help="plan against this Qdrant server (env QDRANT_URL)")
    where.add_argument("--qdrant-path", help="plan against this embedded Qdrant store")
    plan.add_argument("-o", "--output", choices=["text", "json"], default="text")
    plan.set_defaults(func=cmd_plan)
    rec = sub.add_parser("reconfigure", help="approve and apply the pending plan (the seed call)")
    rec.add_argument("name", help="Namespace resource name")
    rec.add_argument("-n", "--namespace", default="default", help="Kubernetes namespace")
    rec.add_argument("--confirm", action="store_true", help="required: approve the pending plan")
    rec.add_argument(
        "--wait",
        action="store_true",
        help="also wait for the plan's backfill Jobs (reprocess: Auto); exit 3 if one failed",
    )
    rec.add_argument("--timeout", type=float, default=120.0, help="seconds to wait (default 120)")
    rec.set_defaults(func=cmd_reconfigure)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except GatewayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    return code


if __name__ == "__main__":
    sys.exit(main())
