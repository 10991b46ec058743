"""A Qdrant endpoint on loopback that fails on command: for fault-injection tests only.

No Qdrant server can be installed here, so the *faulty* server of the fault tests is this
fake; the healthy server they compare against is always the real embedded store. Its modes:

- `OK`: answers the REST calls the gateway makes, with state (collections, vectors,
  metadata), so Namespaces can become Ready on it before the fault and again after;
- `BLACKHOLE`: accepts the connection (or reads the request) and never answers;
- `RESET`: accepts the connection and resets it (RST, no answer);
- `UNAVAILABLE`: answers every request with HTTP 503.

`hits` counts what reached it: every request read, plus every connection it dropped before
reading one. Nothing here is a claim about Qdrant itself: only about what the operator
sends to a server that fails.
"""

from __future__ import annotations

import http.server
import json
import socket
import struct
import threading
import time
from enum import StrEnum
from typing import Any

from qdrant_client import models as qm


class Mode(StrEnum):
    OK = "ok"
    BLACKHOLE = "blackhole"
    RESET = "reset"
    UNAVAILABLE = "unavailable"


VERSION = "1.18.3"


class FaultyQdrant:
    def __init__(self, mode: Mode = Mode.OK) -> None:
        self.mode = mode
        self.collections: dict[str, dict[str, Any]] = {}
        self.hits = 0
        #: Seconds each answer waits (a slow server); the most requests handled at once.
        self.delay = 0.0
        self.peak_concurrent = 0
        self._concurrent = 0
        self._lock = threading.Lock()
        self._unblock = threading.Event()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def handle(self) -> None:
                mode = fake.mode
                if mode in (Mode.RESET, Mode.BLACKHOLE):
                    fake._hit()
                    fake._drop(self.connection, mode)
                    return
                super().handle()

            def _answer(self) -> None:
                fake._hit()
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                mode = fake.mode
                if mode in (Mode.RESET, Mode.BLACKHOLE):
                    self.close_connection = True
                    fake._drop(self.connection, mode)
                    return
                with fake._lock:
                    fake._concurrent += 1
                    fake.peak_concurrent = max(fake.peak_concurrent, fake._concurrent)
                try:
                    if fake.delay:
                        time.sleep(fake.delay)
                    if mode is Mode.UNAVAILABLE:
                        status, payload = 503, {"status": {"error": "Service Unavailable"}}
                    else:
                        body = json.loads(raw) if raw else None
                        with fake._lock:
                            status, payload = fake.route(
                                self.command, self.path.split("?")[0], body
                            )
                finally:
                    with fake._lock:
                        fake._concurrent -= 1
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = _answer

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    # -- control ---------------------------------------------------------------------------

    def set_mode(self, mode: Mode) -> None:
        self.mode = mode
        if mode is not Mode.BLACKHOLE:
            self._unblock.set()  # let held connections go (they are dropped)
            self._unblock = threading.Event()

    def reset_hits(self) -> int:
        with self._lock:
            hits, self.hits = self.hits, 0
        return hits

    def close(self) -> None:
        self._unblock.set()
        self.server.shutdown()
        self.server.server_close()

    def _hit(self) -> None:
        with self._lock:
            self.hits += 1

    def _drop(self, conn: socket.socket, mode: Mode) -> None:
        if mode is Mode.BLACKHOLE:
            self._unblock.wait(300)  # hold it, answer nothing
        # SO_LINGER 0: close() sends RST instead of FIN
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    # -- the REST calls the gateway makes ----------------------------------------------------

    def route(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        ok = {"result": True, "status": "ok", "time": 0.0}
        if path == "/":
            return 200, {"title": "qdrant - vector search engine", "version": VERSION}
        if path == "/aliases" and method == "GET":
            return 200, {"result": {"aliases": []}, "status": "ok", "time": 0.0}
        parts = path.strip("/").split("/")
        if parts[0] != "collections" or len(parts) < 2:
            return 404, {"status": {"error": f"Not found: {path}"}}
        name = parts[1]
        stored = self.collections.get(name)
        if method == "PUT" and len(parts) == 2:
            if stored is not None:
                return 400, {
                    "status": {"error": f"Wrong input: Collection `{name}` already exists!"}
                }
            self.collections[name] = {
                "vectors": dict(body.get("vectors") or {}),
                "sparse_vectors": dict(body.get("sparse_vectors") or {}),
                "metadata": dict(body.get("metadata") or {}),
            }
            return 200, ok
        if stored is None:
            if method == "DELETE" and len(parts) == 2:
                return 200, {**ok, "result": False}
            return 404, {"status": {"error": f"Not found: Collection `{name}` doesn't exist!"}}
        if len(parts) == 2:
            if method == "GET":
                return 200, {"result": self._info(stored), "status": "ok", "time": 0.0}
            if method == "DELETE":
                del self.collections[name]
                return 200, ok
            if method == "PATCH":
                for key, value in (body.get("metadata") or {}).items():
                    if value is None:
                        stored["metadata"].pop(key, None)
                    else:
                        stored["metadata"][key] = value
                return 200, ok
        if len(parts) == 4 and parts[2] == "vectors":
            vector = parts[3]
            if method == "PUT":
                if "sparse" in body:
                    stored["sparse_vectors"][vector] = {"modifier": body["sparse"].get("modifier")}
                else:
                    stored["vectors"][vector] = body["dense"]
            else:
                stored["vectors"].pop(vector, None)
                stored["sparse_vectors"].pop(vector, None)
            return 200, {"result": {"operation_id": 1, "status": "completed"}, "status": "ok"}
        if method == "POST" and parts[-1] == "count":
            return 200, {"result": {"count": 0}, "status": "ok", "time": 0.0}
        return 404, {"status": {"error": f"Not found: {path}"}}

    @staticmethod
    def _info(stored: dict[str, Any]) -> Any:
        info = qm.CollectionInfo(
            status=qm.CollectionStatus.GREEN,
            optimizer_status=qm.OptimizersStatusOneOf.OK,
            points_count=0,
            segments_count=1,
            payload_schema={},
            config=qm.CollectionConfig(
                params=qm.CollectionParams(
                    vectors={
                        k: qm.VectorParams.model_validate(v) for k, v in stored["vectors"].items()
                    },
                    sparse_vectors={
                        k: qm.SparseVectorParams.model_validate(v)
                        for k, v in stored["sparse_vectors"].items()
                    },
                    shard_number=1,
                    replication_factor=1,
                    write_consistency_factor=1,
                    on_disk_payload=True,
                ),
                hnsw_config=qm.HnswConfig(m=16, ef_construct=100, full_scan_threshold=10000),
                optimizer_config=qm.OptimizersConfig(
                    deleted_threshold=0.2,
                    vacuum_min_vector_number=1000,
                    default_segment_number=0,
                    flush_interval_sec=5,
                ),
                metadata=stored["metadata"] or None,
            ),
        )
        return info.model_dump(mode="json", exclude_none=True)
