"""Operator settings: the environment it reads, and kopf's configuration in one place."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kopf

from vectorschema.api import BACKFILL_LABEL, FINALIZER, GROUP
from vectorschema.core.caps import Caps
from vectorschema.core.policy import SCRUBBER, Policy
from vectorschema.core.scope import LabelSelector, Scope, SelectorError
from vectorschema.k8s import kube
from vectorschema.k8s.certs import (
    CA_FILE,
    CERT_FILE,
    KEY_FILE,
    make_serving_cert,
    serving_cert,
    write_cert,
)
from vectorschema.qdrant.pool import Limits

#: The keys of a certificate Secret, in `make_serving_cert`'s and `write_cert`'s order.
CERT_KEYS = (CA_FILE, CERT_FILE, KEY_FILE)

log = logging.getLogger("vectorschema")

#: The Secrets resource, as kopf selects it (its watch is label-selected).
SECRETS = ("", "v1", "secrets")

#: The component Events are posted by (`kubectl describe` shows it in the "From" column).
REPORTING_COMPONENT = "vectorschema-operator"


#: Mounted into every Pod that runs with a service account (the operator's does).
SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw else default


def ensure_peering() -> bool:
    """Whether the operator creates its ClusterKopfPeering at start-up when it is missing
    (`VECTORSCHEMA_ENSURE_PEERING`, default true). The Helm chart ships that object and
    sets this false: a Pod that started before Helm created it would create it first, and
    the install would fail ("already exists"); kopf waits paused until the object exists."""
    raw = os.environ.get("VECTORSCHEMA_ENSURE_PEERING", "true").strip().lower()
    return raw not in ("false", "0", "no")


def resync_interval() -> float:
    """Seconds between drift checks of one Namespace (`VECTORSCHEMA_RESYNC_SECONDS`)."""
    return _env_float("VECTORSCHEMA_RESYNC_SECONDS", 60.0)


def delete_retries() -> int:
    """Attempts to release a collection before letting the resource go."""
    return int(_env_float("VECTORSCHEMA_DELETE_RETRIES", 5))


def delete_retry_delay() -> float:
    return _env_float("VECTORSCHEMA_DELETE_RETRY_DELAY", 10.0)


def workers() -> int:
    """Threads for passes and releases (`VECTORSCHEMA_WORKERS`): a hung server holds at
    most its in-flight bound of them, so the others keep going."""
    return int(_env_float("VECTORSCHEMA_WORKERS", 64))


def workers_per_tenant() -> int:
    """Threads one tenant's passes may hold at once (`VECTORSCHEMA_WORKERS_PER_TENANT`,
    default a quarter of the workers): one namespace cannot take every thread."""
    share = int(_env_float("VECTORSCHEMA_WORKERS_PER_TENANT", 0))
    return share if share > 0 else max(1, workers() // 4)


def caps() -> Caps:
    """The admin's caps on what one tenant may cost (`core.caps`; read on every pass)."""
    return Caps.from_env(os.environ)


#: The Jobs resource, as kopf selects it (its watch is label-selected: only backfill Jobs).
JOBS = ("batch", "v1", "jobs")
#: Defaults of the admin's caps on concurrent backfill Jobs (Helm: backfill.maxJobs,
#: backfill.maxJobsPerNamespace).
DEFAULT_MAX_JOBS = 10
DEFAULT_MAX_JOBS_PER_NAMESPACE = 2


def backfill_caps(env: Mapping[str, str] = os.environ) -> tuple[int | None, int | None]:
    """(per installation, per tenant namespace) caps on concurrent backfill Jobs:
    `VECTORSCHEMA_BACKFILL_MAX_JOBS` and `VECTORSCHEMA_BACKFILL_MAX_JOBS_PER_NAMESPACE`;
    0 or less means no cap."""

    def cap(name: str, default: int) -> int | None:
        raw = env.get(name, "").strip()
        value = int(raw) if raw else default
        return value if value > 0 else None

    return (
        cap("VECTORSCHEMA_BACKFILL_MAX_JOBS", DEFAULT_MAX_JOBS),
        cap("VECTORSCHEMA_BACKFILL_MAX_JOBS_PER_NAMESPACE", DEFAULT_MAX_JOBS_PER_NAMESPACE),
    )


def backfill_qdrant_url(spec_url: str | None, env: Mapping[str, str] = os.environ) -> str | None:
    """The QDRANT_URL a backfill Job's Pods get: the Namespace's own (allowlisted) URL,
    else `VECTORSCHEMA_BACKFILL_QDRANT_URL` (the operator's Qdrant as Pods reach it), else
    the operator's `QDRANT_URL`; None with the embedded store (no Pod can reach it)."""
    return spec_url or env.get("VECTORSCHEMA_BACKFILL_QDRANT_URL") or env.get("QDRANT_URL") or None


def recovery_spread() -> float:
    """Seconds over which the Namespaces waiting on a server are woken when it is back."""
    return _env_float("VECTORSCHEMA_RECOVERY_SPREAD_SECONDS", 30.0)


def qdrant_limits() -> Limits:
    """Timeouts and the in-flight bound of Qdrant servers."""
    return Limits(
        timeout=_env_float("VECTORSCHEMA_QDRANT_TIMEOUT", 10.0),
        max_in_flight=int(_env_float("VECTORSCHEMA_QDRANT_MAX_IN_FLIGHT", 16)),
        per_tenant=int(_env_float("VECTORSCHEMA_QDRANT_MAX_IN_FLIGHT_PER_TENANT", 0)) or None,
        count_timeout=_env_float("VECTORSCHEMA_COUNT_TIMEOUT", 5.0),
    )


def embedded_store_refusal(
    env: Mapping[str, str] | None = None, token: Path | None = None
) -> str | None:
    """Why the operator must not start, or None.

    In a Pod (a service-account token is mounted) with neither `QDRANT_URL` nor an explicit
    `QDRANT_PATH`, the operator would fall back to an embedded store inside the Pod's
    filesystem: tenants' collections would live and die with the Pod.
    """
    env = os.environ if env is None else env
    token = SERVICE_ACCOUNT_TOKEN if token is None else token
    if env.get("QDRANT_URL") or env.get("QDRANT_PATH") or not token.exists():
        return None
    return (
        "running in a Pod without QDRANT_URL: set QDRANT_URL (and QDRANT_API_KEY) to the "
        "Qdrant server the operator manages, or set QDRANT_PATH to a persistent volume to "
        "use the embedded store on purpose"
    )


def policy() -> Policy:
    """The admin's tenancy policy, from the environment (read on every pass)."""
    return Policy.from_env(os.environ)


def metrics_port(env: Mapping[str, str] = os.environ) -> int | None:
    """Where /metrics and /readyz are served (`VECTORSCHEMA_METRICS_PORT`); None: off."""
    raw = env.get("VECTORSCHEMA_METRICS_PORT", "").strip()
    if not raw:
        return None
    port = int(raw)
    if not 0 < port < 65536:
        raise ValueError(f"VECTORSCHEMA_METRICS_PORT={raw!r} is not a port number")
    return port


#: The admin's opt-in to scoping by the resources' own labels (which tenants write).
OBJECT_LABEL_SCOPE = "VECTORSCHEMA_OBJECT_LABEL_SCOPE"
TRUE = ("true", "1", "yes")

FALSE = ("false", "0", "no")


def gc_tuning(env: Mapping[str, str] = os.environ) -> bool:
    """Whether start-up tunes Python's cyclic garbage collector (`VECTORSCHEMA_GC_TUNING`,
    default true; false leaves Python's defaults). Any other value stops the operator at
    startup, naming it."""
    raw = env.get("VECTORSCHEMA_GC_TUNING", "true").strip().lower()
    if raw not in TRUE + FALSE:
        raise ValueError(f"VECTORSCHEMA_GC_TUNING={raw!r} is neither true nor false")
    return raw in TRUE


def scope(env: Mapping[str, str] = os.environ) -> Scope:
    """Which Namespace resources to serve (`core.scope.Scope`): by the labels of their
    Kubernetes namespace (`VECTORSCHEMA_NAMESPACE_SELECTOR`) and, only with
    `VECTORSCHEMA_OBJECT_LABEL_SCOPE=true`, by their own (`VECTORSCHEMA_LABEL_SELECTOR`).
    Empty: all. A selector that does not parse, or an object-label selector without the
    opt-in, stops the operator at startup, naming it."""
    objects = env.get("VECTORSCHEMA_LABEL_SELECTOR", "")
    if objects.strip() and env.get(OBJECT_LABEL_SCOPE, "").strip().lower() not in TRUE:
        raise SelectorError(
            f"VECTORSCHEMA_LABEL_SELECTOR={objects!r} selects Namespace resources by their own "
            "labels, which any tenant who may edit them can change (and so pick the "
            "installation, and the policy, that serves them). Select by the Kubernetes "
            "namespace's labels with VECTORSCHEMA_NAMESPACE_SELECTOR, or opt in with "
            f"{OBJECT_LABEL_SCOPE}=true"
        )
    return Scope(
        namespaces=LabelSelector.parse(env.get("VECTORSCHEMA_NAMESPACE_SELECTOR", "")),
        objects=LabelSelector.parse(objects),
    )


# --- the admission webhook ----------------------------------------------------------------

PORT_ENV = "VECTORSCHEMA_WEBHOOK_PORT"
#: A PEM bundle: when set, the webhook's callers must present a certificate it signed.
CLIENT_CA_ENV = "VECTORSCHEMA_WEBHOOK_CLIENT_CA"


@dataclass(frozen=True)
class WebhookSettings:
    """How the admission webhook is served and registered (`VECTORSCHEMA_WEBHOOK_*`).

    - `PORT`: serve the webhook on this port; unset: no webhook (the default).
    - `ADDR`: listen address (default 127.0.0.1: the local control plane's API server
      reaches it on loopback; in a Pod, 0.0.0.0).
    - `HOST`: the host the API server calls and the certificate names (default: ADDR,
      or 127.0.0.1 for a catch-all ADDR).
    - `CERT_DIR`: `tls.crt`, `tls.key`, `ca.crt` to use (cert-manager's or the chart's
      Secret); when absent, made there (default: a new temporary directory).
    - `CONFIGURATION`: the ValidatingWebhookConfiguration the operator registers itself
      (default `vectorschema.dev`); empty when the chart installs it.
    - `SERVICE`: `namespace/name[:port]` of the Service in front of the operator, when it
      registers itself in a cluster (the configuration then names the Service, not a URL).
    - `CERT_SECRET`: with `SERVICE`, the Secret (in the Service's namespace) that holds
      the certificate every replica serves: the first to start makes it, the others read
      it, so all of them match the one caBundle registered.
    - `TIMEOUT_SECONDS`: the API server's timeoutSeconds (default 5, at most 30).
    - `PLAN_SECONDS`: how long the webhook waits for Qdrant before it answers without the
      plan (default 2; kept below TIMEOUT_SECONDS).
    - `CLIENT_CA`: path to a PEM bundle; when set, the webhook requires a client
      certificate signed by it (the API server's, from its admission configuration's
      kubeConfigFile) and refuses any other caller in the TLS handshake. Unset: any caller
      that reaches the port is answered (the defense-in-depth check in
      `admission.genuine` still applies).
    """

    port: int | None = None
    addr: str = "127.0.0.1"
    host: str = "127.0.0.1"
    cert_dir: Path | None = None
    configuration: str = "vectorschema.dev"
    service: str | None = None
    cert_secret: str | None = None
    timeout_seconds: int = 5
    plan_seconds: float = 2.0
    client_ca: Path | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WebhookSettings:
        raw_port = env.get(PORT_ENV, "").strip()
        port = int(raw_port) if raw_port else None
        if port is not None and not 0 < port < 65536:
            raise ValueError(f"{PORT_ENV}={raw_port}: not a port number")
        addr = env.get("VECTORSCHEMA_WEBHOOK_ADDR", "").strip() or "127.0.0.1"
        host = env.get("VECTORSCHEMA_WEBHOOK_HOST", "").strip() or (
            "127.0.0.1" if addr in ("0.0.0.0", "::") else addr
        )
        cert_dir = env.get("VECTORSCHEMA_WEBHOOK_CERT_DIR", "").strip()
        timeout = min(30, max(1, int(env.get("VECTORSCHEMA_WEBHOOK_TIMEOUT_SECONDS") or 5)))
        plan = float(env.get("VECTORSCHEMA_WEBHOOK_PLAN_SECONDS") or min(2.0, timeout / 2))
        client_ca = env.get(CLIENT_CA_ENV, "").strip()
        if client_ca and not Path(client_ca).is_file():
            raise ValueError(f"{CLIENT_CA_ENV}={client_ca}: no such file")
        return cls(
            port=port,
            addr=addr,
            host=host,
            cert_dir=Path(cert_dir) if cert_dir else None,
            configuration=env.get("VECTORSCHEMA_WEBHOOK_CONFIGURATION", "vectorschema.dev"),
            service=env.get("VECTORSCHEMA_WEBHOOK_SERVICE", "").strip() or None,
            cert_secret=env.get("VECTORSCHEMA_WEBHOOK_CERT_SECRET", "").strip() or None,
            timeout_seconds=timeout,
            plan_seconds=min(plan, timeout - 0.5),
            client_ca=Path(client_ca) if client_ca else None,
        )

    @property
    def enabled(self) -> bool:
        return self.port is not None


def webhook_settings() -> WebhookSettings:
    return WebhookSettings.from_env(os.environ)


class WebhookOff:
    """`settings.admission.server` when no webhook is configured: serves nothing (kopf
    refuses to start with admission handlers and no server)."""

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        await asyncio.Event().wait()
        yield {}  # pragma: no cover - never reached


def admission_server(ws: WebhookSettings) -> tuple[kopf.WebhookServer | WebhookOff, bytes | None]:
    """kopf's webhook server, with the mounted certificate or one made now, and the CA
    the API server must trust (None when no webhook is served)."""
    if ws.port is None:
        return WebhookOff(), None
    cert_dir = ws.cert_dir or Path(tempfile.mkdtemp(prefix="vectorschema-webhook-"))
    hosts = [ws.host]
    if ws.service is not None:
        svc_ns, _, rest = ws.service.partition("/")
        svc = rest.partition(":")[0]
        hosts = [f"{svc}.{svc_ns}.svc", f"{svc}.{svc_ns}.svc.cluster.local", ws.host]
    if ws.service is not None and ws.cert_secret is not None:
        svc_ns = ws.service.partition("/")[0]
        pem = kube.read_or_create_secret(
            svc_ns,
            ws.cert_secret,
            lambda: dict(zip(CERT_KEYS, make_serving_cert(hosts), strict=True)),
        )
        cert = write_cert(cert_dir, *(pem[k] for k in CERT_KEYS))
    else:
        cert = serving_cert(cert_dir, hosts)
    server = kopf.WebhookServer(
        addr=ws.addr,
        port=ws.port,
        host=ws.host,
        certfile=str(cert.certfile),
        pkeyfile=str(cert.keyfile),
        cafile=str(cert.cafile),
        # Caller authentication: only a client certificate of the admin's CA (the API
        # server's) completes the handshake.
        verify_mode=ssl.CERT_REQUIRED if ws.client_ca is not None else None,
        verify_cafile=str(ws.client_ca) if ws.client_ca is not None else None,
    )
    return server, cert.cafile.read_bytes()


class NoDiffBase(kopf.DiffBaseStorage):
    """No diff-base: every object looks unchanged since it was last handled.

    kopf's diff-base (the `last-handled-configuration` annotation) exists for on.create,
    on.update and on.field handlers; this operator has none (a daemon per object, event
    handlers, on.delete). With it, kopf patched that annotation on every create and every
    spec change: one more API write per change, and one more watch event to process
    (a fifth of the requests while 1,000 Namespaces were created)."""

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return self.build(body=body)

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


#: Objects per page of kopf's lists (`settings.watching.chunk_size`): at most this many
#: labelled Secrets (1 MiB each at most) are in memory at once while listing.
LIST_CHUNK = 10


def configure_kopf(settings: kopf.OperatorSettings, webhook: WebhookSettings) -> bytes | None:
    """All kopf settings in one place. Returns the CA of the webhook's certificate (None
    when no webhook is served)."""
    # The webhook configuration is registered by `admission.register`, not by kopf's
    # managed mode, which hard-codes timeoutSeconds: 30 (ours is a few seconds).
    settings.admission.server, ca = admission_server(webhook)
    settings.admission.managed = None
    current = policy()
    for problem in (*current.problems, *caps().problems):
        log.error("tenancy policy: %s", problem)
    # Watch (and so read) only the Secrets labelled for the operator, server-side.
    settings.watching.label_selectors[SECRETS] = current.label_selector
    # Every initial list (and every re-list after a 410 Gone) in pages of LIST_CHUNK
    # objects: labelled Secrets hold up to 1 MiB each, and one unpaged list of them all
    # is read, decoded and parsed whole (about 3x its size at the peak): enough of them
    # and the operator is OOM-killed at every start, for every tenant.
    settings.watching.chunk_size = LIST_CHUNK
    # Watch only the Jobs the operator runs (backfill), server-side.
    settings.watching.label_selectors[JOBS] = f"{BACKFILL_LABEL}=true"
    SCRUBBER.remember(os.environ.get("QDRANT_API_KEY"), pin=True)
    install_log_scrubbing()
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.posting.level = logging.INFO
    settings.posting.reporting_component = REPORTING_COMPONENT
    settings.posting.reporting_instance = os.environ.get("HOSTNAME") or socket.gethostname()
    # One ClusterKopfPeering per installation, also when it watches only some namespaces
    # (`--namespace`): kopf would otherwise look for a KopfPeering in each of them.
    if not settings.peering.standalone:
        settings.peering.clusterwide = True
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30
    logging.getLogger("kopf.objects").addFilter(quiet_watchers)
    # qdrant-client's HTTP stack logs every request at INFO: one line per Qdrant call
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return ca


def quiet_watchers(record: logging.LogRecord) -> bool:
    """Drop kopf's per-event "Handler 'x_event' succeeded" lines: the watchers only wake
    control loops, which log what they change."""
    message = record.getMessage()
    return not (message.startswith("Handler '") and "_event' succeeded" in message)


_factory_installed = False


def install_log_scrubbing() -> None:
    """Scrub every known secret value from every log record of the process (kopf's and
    the libraries' included), when the record is made: messages, arguments and
    tracebacks. kopf posts its own log lines as Events, so those are scrubbed too."""
    global _factory_installed
    if _factory_installed:
        return
    _factory_installed = True
    previous = logging.getLogRecordFactory()
    formatter = logging.Formatter()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: leave it to the handler to report
            return record
        record.msg, record.args = SCRUBBER.scrub(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = SCRUBBER.scrub(formatter.formatException(record.exc_info))
        return record

    logging.setLogRecordFactory(factory)
