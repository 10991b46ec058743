"""qdrantlite: a small Qdrant REST server over qdrant-client's local mode.

No registry serves a Qdrant server, and Qdrant's code may not be committed. The operator's
Pods (two replicas, and backfill Jobs) need one Qdrant that all of them reach over the
network, so this serves the subset of Qdrant's REST API that the operator's gateway and a
backfill program use, over the same embedded store the rest of CI runs on:

- `GET /`, `/healthz`, `/livez`, `/readyz`;
- collections: `GET /collections`, `GET|PUT|PATCH|DELETE /collections/{c}`,
  `GET /collections/{c}/exists`; named vectors `PUT|DELETE /collections/{c}/vectors/{v}`;
- aliases: `POST /collections/aliases`, `GET /aliases`, `GET /collections/{c}/aliases`;
- points: `PUT /collections/{c}/points` (upsert), `POST .../points` (retrieve),
  `POST .../points/count`, `POST .../points/scroll`, `PUT .../points/vectors`
  (update_vectors), `POST .../points/delete`, `POST .../points/vectors/delete`,
  `POST .../points/payload` (set_payload), `POST .../points/query`.

Request bodies are parsed with qdrant-client's own REST models (`qdrant_client.http.models`,
`extra="forbid"`), so a body a real server would refuse as malformed is refused here (400).

Points, vectors, payloads, counts and scrolls are local mode's. Where local mode keeps less
than a server (it ignores per-vector HNSW/quantization/on-disk updates, drops the datatype of
a vector added in place, keeps no shard or replication settings), this server keeps the
collection's configuration itself and reports it the way Qdrant 1.18 does: what was given at
creation, merged with later updates. That is the behaviour the gateway's conformance suite
(tests/conformance, run against a real Qdrant 1.18.3 by hand) pins down, and this server
passes it as a remote backend (`CONFORMANCE_QDRANT_URL`).

One lock serialises every request (local mode is not thread-safe). With `--api-key`, every
request must carry it in the `api-key` header (or `Authorization: Bearer`), else 401.

Run::

    python qdrantlite.py --host 10.88.0.1 --port 6333 [--path DIR] [--api-key KEY]

This file imports only the standard library, pydantic and qdrant-client, so it also runs in
a Pod of the operator image (which has both), mounted from a ConfigMap.
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import TypeAdapter, ValidationError
from qdrant_client import QdrantClient
from qdrant_client.http import models as m

log = logging.getLogger("qdrantlite")

#: The Qdrant release whose REST behaviour this imitates (named vectors in place: >= 1.18).
VERSION = "1.18.3"
#: What a server reports for settings not given at creation.
DEFAULT_PARAMS: dict[str, Any] = {
    "shard_number": 1,
    "replication_factor": 1,
    "write_consistency_factor": 1,
    "on_disk_payload": True,
}
DEFAULT_HNSW: dict[str, Any] = {"m": 16, "ef_construct": 100, "full_scan_threshold": 10000}
DEFAULT_OPTIMIZERS: dict[str, Any] = {
    "deleted_threshold": 0.2,
    "vacuum_min_vector_number": 1000,
    "default_segment_number": 0,
    "flush_interval_sec": 5,
}
STATE_FILE = "qdrantlite.json"


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def not_found(collection: str) -> HttpError:
    return HttpError(404, f"Not found: Collection `{collection}` doesn't exist!")


def parse(model: Any, body: Any) -> Any:
    """`body` as qdrant-client's REST model `model` (a class or a Union); 400 if it is not."""
    try:
        return TypeAdapter(model).validate_python(body)
    except ValidationError as exc:
        errors = exc.errors()
        where = ".".join(str(p) for p in errors[0]["loc"]) if errors else ""
        msg = errors[0]["msg"] if errors else str(exc)
        raise HttpError(400, f"Format error in JSON body: {where}: {msg}") from None


def dump(obj: Any) -> Any:
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json", exclude_none=True)
    if isinstance(obj, list):
        return [dump(o) for o in obj]
    if isinstance(obj, tuple):
        return [dump(o) for o in obj]
    return obj


def merge(base: dict[str, Any] | None, diff: Any) -> dict[str, Any]:
    """A config dict with the set fields of a diff model applied."""
    out = dict(base or {})
    if diff is not None:
        out.update(diff.model_dump(mode="json", exclude_none=True))
    return out


class Store:
    """The embedded store plus the configuration a server keeps per collection."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        if path:
            Path(path).mkdir(parents=True, exist_ok=True)
            self.client = QdrantClient(path=path, force_disable_check_same_thread=True)
        else:
            self.client = QdrantClient(location=":memory:")
        self.lock = threading.RLock()
        #: collection -> {"vectors", "sparse_vectors", "params", "hnsw_config",
        #: "optimizer_config", "quantization_config", "metadata"} as a server reports them
        self.configs: dict[str, dict[str, Any]] = {}
        self._load()

    # -- persistence of the server-side configuration ---------------------------------------

    def _state_file(self) -> Path | None:
        return Path(self.path) / STATE_FILE if self.path else None

    def _load(self) -> None:
        state = self._state_file()
        if state is not None and state.is_file():
            self.configs = json.loads(state.read_text())
        for name in [c.name for c in self.client.get_collections().collections]:
            if name not in self.configs:  # made by someone else with this store
                info = self.client.get_collection(name)
                params = info.config.params
                vectors = params.vectors
                self.configs[name] = self._new_config(
                    m.CreateCollection(
                        vectors=vectors,
                        sparse_vectors=params.sparse_vectors,
                        metadata=info.config.metadata,
                    )
                )

    def _save(self) -> None:
        state = self._state_file()
        if state is not None:
            tmp = state.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.configs))
            os.replace(tmp, state)

    # -- helpers ---------------------------------------------------------------------------

    def resolve(self, name: str) -> str:
        """A collection name, or the collection an alias names."""
        if name in self.configs:
            return name
        for alias in self.client.get_aliases().aliases:
            if alias.alias_name == name and alias.collection_name in self.configs:
                return alias.collection_name
        raise not_found(name)

    @staticmethod
    def _new_config(body: m.CreateCollection) -> dict[str, Any]:
        vectors = body.vectors
        if isinstance(vectors, m.VectorParams):
            dense: Any = dump(vectors)
        else:
            dense = {k: dump(v) for k, v in (vectors or {}).items()}
        params = dict(DEFAULT_PARAMS)
        for key in DEFAULT_PARAMS:
            value = getattr(body, key)
            if value is not None:
                params[key] = value
        return {
            "vectors": dense,
            "sparse_vectors": {k: dump(v) for k, v in (body.sparse_vectors or {}).items()},
            "params": params,
            "hnsw_config": merge(DEFAULT_HNSW, body.hnsw_config),
            "optimizer_config": merge(DEFAULT_OPTIMIZERS, body.optimizers_config),
            "quantization_config": dump(body.quantization_config),
            "metadata": dict(body.metadata or {}),
        }

    # -- collections ------------------------------------------------------------------------

    def list_collections(self) -> Any:
        return {"collections": [{"name": n} for n in sorted(self.configs)]}

    def exists(self, name: str) -> Any:
        try:
            self.resolve(name)
        except HttpError:
            return {"exists": False}
        return {"exists": True}

    def create(self, name: str, raw: Any) -> Any:
        body = parse(m.CreateCollection, raw or {})
        if name in self.configs:
            raise HttpError(400, f"Wrong input: Collection `{name}` already exists!")
        if any(a.alias_name == name for a in self.client.get_aliases().aliases):
            raise HttpError(  # Qdrant's own answer (since 1.1)
                400,
                f"Wrong input: Can't create collection with name {name}. "
                "Alias with the same name already exists",
            )
        try:
            self.client.create_collection(
                name,
                vectors_config=body.vectors if body.vectors is not None else {},
                sparse_vectors_config=body.sparse_vectors,
            )
        except ValueError as exc:
            raise HttpError(400, f"Wrong input: {exc}") from None
        self.configs[name] = self._new_config(body)
        self._save()
        return True

    def delete(self, name: str) -> Any:
        existed = name in self.configs
        if existed:
            self.client.delete_collection(name)
            del self.configs[name]
            self._save()
        return existed

    def info(self, name: str) -> Any:
        real = self.resolve(name)
        live = self.client.get_collection(real)
        cfg = self.configs[real]
        vectors = cfg["vectors"]
        info = m.CollectionInfo(
            status=live.status,
            optimizer_status=live.optimizer_status,
            indexed_vectors_count=live.indexed_vectors_count,
            points_count=live.points_count,
            segments_count=live.segments_count,
            payload_schema=live.payload_schema,
            config=m.CollectionConfig(
                params=m.CollectionParams(
                    vectors=(
                        m.VectorParams.model_validate(vectors)
                        if "size" in vectors
                        else {k: m.VectorParams.model_validate(v) for k, v in vectors.items()}
                    ),
                    sparse_vectors={
                        k: m.SparseVectorParams.model_validate(v)
                        for k, v in cfg["sparse_vectors"].items()
                    },
                    **cfg["params"],
                ),
                hnsw_config=m.HnswConfig.model_validate(cfg["hnsw_config"]),
                optimizer_config=m.OptimizersConfig.model_validate(cfg["optimizer_config"]),
                quantization_config=(
                    TypeAdapter(m.QuantizationConfig).validate_python(cfg["quantization_config"])
                    if cfg["quantization_config"]
                    else None
                ),
                metadata=cfg["metadata"] or None,
            ),
        )
        return dump(info)

    def update(self, name: str, raw: Any) -> Any:
        body = parse(m.UpdateCollection, raw or {})
        real = self.resolve(name)
        cfg = self.configs[real]
        dense = cfg["vectors"]
        named = {} if "size" in dense else dense
        # check every diff before applying any, like the server
        diffs = body.vectors if isinstance(body.vectors, dict) else {}
        for vector in diffs:
            present = vector in named or (vector == "" and "size" in dense)
            if not present:
                raise HttpError(400, f"Wrong input: Not existing vector name error: {vector}")
        for vector in body.sparse_vectors or {}:
            if vector not in cfg["sparse_vectors"]:
                raise HttpError(400, f"Wrong input: Not existing vector name error: {vector}")
        for vector, diff in diffs.items():
            target = dense if vector == "" and "size" in dense else named[vector]
            if diff.hnsw_config is not None:
                target["hnsw_config"] = merge(target.get("hnsw_config"), diff.hnsw_config)
            if diff.quantization_config is not None:
                if diff.quantization_config == m.Disabled.DISABLED:
                    target.pop("quantization_config", None)
                else:
                    target["quantization_config"] = dump(diff.quantization_config)
            if diff.on_disk is not None:
                target["on_disk"] = diff.on_disk
        for vector, sparse in (body.sparse_vectors or {}).items():
            target = cfg["sparse_vectors"][vector]
            if sparse.index is not None:
                target["index"] = merge(target.get("index"), sparse.index)
            if sparse.modifier is not None:
                target["modifier"] = dump(sparse.modifier)
        if body.hnsw_config is not None:
            cfg["hnsw_config"] = merge(cfg["hnsw_config"], body.hnsw_config)
        if body.optimizers_config is not None:
            cfg["optimizer_config"] = merge(cfg["optimizer_config"], body.optimizers_config)
        if body.quantization_config is not None:
            q = body.quantization_config
            cfg["quantization_config"] = None if q == m.Disabled.DISABLED else dump(q)
        if body.params is not None:
            for key, value in body.params.model_dump(mode="json", exclude_none=True).items():
                if key in DEFAULT_PARAMS:
                    cfg["params"][key] = value
        if body.metadata is not None:
            for key, value in body.metadata.items():
                if value is None:
                    cfg["metadata"].pop(key, None)
                else:
                    cfg["metadata"][key] = value
        self._save()
        return True

    # -- named vectors in place ----------------------------------------------------------------

    def create_vector(self, name: str, vector: str, raw: Any) -> Any:
        config = parse(m.VectorNameConfig, raw)
        real = self.resolve(name)
        cfg = self.configs[real]
        if "size" in cfg["vectors"]:
            raise HttpError(400, "Wrong input: the collection has a single unnamed vector")
        if isinstance(config, m.DenseVectorNameConfig):
            d = config.dense
            wanted = {
                k: v
                for k, v in {
                    "size": d.size,
                    "distance": dump(d.distance),
                    "multivector_config": dump(d.multivector_config),
                    "datatype": dump(d.datatype),
                }.items()
                if v is not None
            }
            existing = cfg["vectors"].get(vector)
            if existing is not None or vector in cfg["sparse_vectors"]:
                same = existing is not None and all(
                    existing.get(k) == wanted.get(k)
                    for k in ("size", "distance", "multivector_config", "datatype")
                )
                if same:
                    return {"operation_id": 0, "status": "completed"}
                raise HttpError(
                    400, f"Wrong input: Vector `{vector}` already exists with another config"
                )
            self._local(lambda: self.client.create_vector_name(real, vector, config))
            cfg["vectors"][vector] = wanted
        else:
            s = config.sparse
            wanted = {}
            if s.modifier is not None:
                wanted["modifier"] = dump(s.modifier)
            if s.datatype is not None:
                wanted["index"] = {"datatype": dump(s.datatype)}
            existing = cfg["sparse_vectors"].get(vector)
            if existing is not None or vector in cfg["vectors"]:
                old = existing or {}
                modifiers = {old.get("modifier"), wanted.get("modifier")} - {None, "none"}
                datatypes = [(d.get("index") or {}).get("datatype") for d in (old, wanted)]
                same = (
                    existing is not None
                    and (old.get("modifier") == wanted.get("modifier") or not modifiers)
                    and datatypes[0] == datatypes[1]
                )
                if same:
                    return {"operation_id": 0, "status": "completed"}
                raise HttpError(
                    400, f"Wrong input: Vector `{vector}` already exists with another config"
                )
            self._local(lambda: self.client.create_vector_name(real, vector, config))
            cfg["sparse_vectors"][vector] = wanted
        self._save()
        return {"operation_id": 0, "status": "completed"}

    def delete_vector(self, name: str, vector: str) -> Any:
        real = self.resolve(name)
        cfg = self.configs[real]
        if vector in cfg["sparse_vectors"] or vector in cfg["vectors"]:
            self._local(lambda: self.client.delete_vector_name(real, vector))
            cfg["sparse_vectors"].pop(vector, None)
            if "size" not in cfg["vectors"]:
                cfg["vectors"].pop(vector, None)
            self._save()
        return {"operation_id": 0, "status": "completed"}

    # -- aliases ---------------------------------------------------------------------------

    def change_aliases(self, raw: Any) -> Any:
        body = parse(m.ChangeAliasesOperation, raw)
        return self._local(lambda: self.client.update_collection_aliases(body.actions))

    def aliases(self, name: str | None) -> Any:
        if name is None:
            return dump(self.client.get_aliases())
        real = self.resolve(name)
        return dump(self.client.get_collection_aliases(real))

    # -- points ----------------------------------------------------------------------------

    def points(self, method: str, name: str, op: str, raw: Any) -> Any:
        real = self.resolve(name)
        c = self.client
        done = {"operation_id": 0, "status": "completed"}
        if method == "PUT" and op == "":
            body = parse(m.PointInsertOperations, raw)
            if isinstance(body, m.PointsBatch):
                batch = body.batch
                points: Any = m.Batch(ids=batch.ids, vectors=batch.vectors, payloads=batch.payloads)
            else:
                points = body.points
            self._local(lambda: c.upsert(real, points))
            return done
        if method == "POST" and op == "":
            req = parse(m.PointRequest, raw)
            got = self._local(
                lambda: c.retrieve(
                    real,
                    req.ids,
                    with_payload=req.with_payload if req.with_payload is not None else True,
                    with_vectors=req.with_vector if req.with_vector is not None else False,
                )
            )
            return dump(got)
        if method == "POST" and op == "count":
            req = parse(m.CountRequest, raw or {})
            got = self._local(lambda: c.count(real, count_filter=req.filter, exact=True))
            return dump(got)
        if method == "POST" and op == "scroll":
            req = parse(m.ScrollRequest, raw or {})
            records, offset = self._local(
                lambda: c.scroll(
                    real,
                    scroll_filter=req.filter,
                    limit=req.limit or 10,
                    offset=req.offset,
                    with_payload=req.with_payload if req.with_payload is not None else True,
                    with_vectors=req.with_vector if req.with_vector is not None else False,
                    order_by=req.order_by,
                )
            )
            return {"points": dump(records), "next_page_offset": offset}
        if method == "PUT" and op == "vectors":
            req = parse(m.UpdateVectors, raw)
            self._local(lambda: c.update_vectors(real, req.points, update_filter=req.update_filter))
            return done
        if method == "POST" and op == "delete":
            selector = parse(m.PointsSelector, raw)
            self._local(lambda: c.delete(real, selector))
            return done
        if method == "POST" and op == "vectors/delete":
            req = parse(m.DeleteVectors, raw)
            sel: Any = req.points if req.points is not None else req.filter
            self._local(lambda: c.delete_vectors(real, req.vector, sel))
            return done
        if method == "POST" and op == "payload":
            req = parse(m.SetPayload, raw)
            sel = req.points if req.points is not None else req.filter
            self._local(lambda: c.set_payload(real, req.payload, sel, key=req.key))
            return done
        if method == "POST" and op == "query":
            req = parse(m.QueryRequest, raw or {})
            got = self._local(
                lambda: c.query_points(
                    real,
                    query=req.query,
                    using=req.using,
                    query_filter=req.filter,
                    limit=req.limit or 10,
                    offset=req.offset,
                    with_payload=req.with_payload if req.with_payload is not None else False,
                    with_vectors=req.with_vector if req.with_vector is not None else False,
                    score_threshold=req.score_threshold,
                )
            )
            return dump(got)
        raise HttpError(404, f"Not found: {method} /collections/{name}/points/{op}")

    @staticmethod
    def _local(fn: Callable[[], Any]) -> Any:
        """A local-mode call; its ValueError is the client's mistake (400 or 404)."""
        try:
            return fn()
        except ValueError as exc:
            text = " ".join(str(exc).split())
            if "not found" in text.lower() and "collection" in text.lower():
                raise HttpError(404, f"Not found: {text}") from None
            raise HttpError(400, f"Wrong input: {text}") from None


def route(store: Store, method: str, path: str, body: Any) -> Any:
    """The result of one request (the `result` of Qdrant's answer)."""
    parts = [unquote(p) for p in path.strip("/").split("/") if p]
    if not parts:
        return None
    if parts == ["aliases"] and method == "GET":
        return store.aliases(None)
    if parts[0] != "collections":
        raise HttpError(404, f"Not found: {path}")
    if len(parts) == 1 and method == "GET":
        return store.list_collections()
    if parts[1:] == ["aliases"] and method == "POST":
        return store.change_aliases(body)
    name = parts[1]
    rest = parts[2:]
    if not rest:
        if method == "GET":
            return store.info(name)
        if method == "PUT":
            return store.create(name, body)
        if method == "PATCH":
            return store.update(name, body)
        if method == "DELETE":
            return store.delete(name)
    elif rest == ["exists"] and method == "GET":
        return store.exists(name)
    elif rest == ["aliases"] and method == "GET":
        return store.aliases(name)
    elif rest[0] == "vectors" and len(rest) == 2:
        if method == "PUT":
            return store.create_vector(name, rest[1], body)
        if method == "DELETE":
            return store.delete_vector(name, rest[1])
    elif rest[0] == "points":
        return store.points(method, name, "/".join(rest[1:]), body)
    raise HttpError(404, f"Not found: {method} {path}")


def make_handler(store: Store, api_key: str | None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "qdrantlite"

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s %s", self.address_string(), format % args)

        def _send(self, status: int, payload: Any, content_type: str = "application/json") -> None:
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            if api_key is None:
                return True
            given = self.headers.get("api-key") or ""
            auth = self.headers.get("Authorization") or ""
            if not given and auth.lower().startswith("bearer "):
                given = auth[7:]
            return hmac.compare_digest(given.encode(), api_key.encode())

        def _answer(self) -> None:
            started = time.monotonic()
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            url = urlsplit(self.path)
            if url.path in ("/healthz", "/livez", "/readyz"):
                self._send(200, b"healthz check passed", "text/plain")
                return
            if not self._authorized():
                self._send(401, {"status": {"error": "Unauthorized: invalid api-key"}})
                return
            if url.path == "/" and self.command == "GET":
                self._send(200, {"title": "qdrant - vector search engine", "version": VERSION})
                return
            try:
                body = json.loads(raw) if raw else None
                with store.lock:
                    result = route(store, self.command, url.path, body)
            except HttpError as exc:
                self._send(exc.status, {"status": {"error": exc.message}, "time": 0.0})
                return
            except json.JSONDecodeError as exc:
                self._send(400, {"status": {"error": f"Format error in JSON body: {exc}"}})
                return
            except Exception as exc:  # a bug here, not the client's: say so
                log.exception("%s %s failed", self.command, self.path)
                self._send(500, {"status": {"error": f"Service internal error: {exc}"}})
                return
            # query parameters (wait, timeout, consistency) change nothing here
            self._send(200, {"result": result, "status": "ok", "time": time.monotonic() - started})

        do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = _answer

    return Handler


class Server:
    """The server in a thread (for tests): `Server(host, port).start()`; `.url`."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        path: str | None = None,
        api_key: str | None = None,
    ) -> None:
        self.store = Store(path)
        self.httpd = ThreadingHTTPServer((host, port), make_handler(self.store, api_key))
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Server:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        with contextlib.suppress(Exception):
            self.store.client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qdrantlite", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=6333)
    parser.add_argument("--path", default=None, help="store directory (default: in memory)")
    parser.add_argument(
        "--api-key", default=os.environ.get("QDRANT__SERVICE__API_KEY") or None,
        help="require this API key (default: $QDRANT__SERVICE__API_KEY; none)",
    )  # fmt: skip
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s qdrantlite %(levelname)s %(message)s",
    )
    server = Server(args.host, args.port, path=args.path, api_key=args.api_key)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    log.info("serving the Qdrant %s REST subset at %s (store: %s)", VERSION, server.url,
             args.path or "in memory")  # fmt: skip
    try:
        server.httpd.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
