"""The floor for any operator (`baseline_p50_s`): a minimal watch-then-PATCH-/status loop
in plain aiohttp. It watches the Namespace resources of one Kubernetes namespace and, for
each generation it has not answered yet, merge-patches `/status` with that
`observedGeneration` and a Ready condition. No planning, no Qdrant, no cache.

It prints `watching` on stdout once its first watch is open (the benchmark waits for that
line before it sends the first change: a condition, not a fixed start-up window). A list or
watch the API server refuses (a resource just made, a version too old) is retried from a
fresh list, so the loop cannot die quietly and leave the benchmark waiting.

Usage: `python bench/baseline_responder.py SERVER CA CERT KEY NAMESPACE` (until killed).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
from datetime import UTC, datetime
from typing import Any

import aiohttp

BASE = "/apis/vectorschema.dev/v1alpha1/namespaces/{ns}/namespaces"


async def main(server: str, ca: str, cert: str, key: str, ns: str) -> None:
    ctx = ssl.create_default_context(cafile=ca)
    ctx.load_cert_chain(cert, key)
    base = server + BASE.format(ns=ns)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=ctx), timeout=aiohttp.ClientTimeout(total=None)
    ) as session:

        async def answer(obj: dict[str, Any]) -> None:
            gen = obj["metadata"].get("generation")
            if (obj.get("status") or {}).get("observedGeneration") == gen:
                return
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            ready = {
                "type": "Ready",
                "status": "True",
                "reason": "Reconciled",
                "message": "baseline",
                "lastTransitionTime": now,
                "observedGeneration": gen,
            }
            patch = {"status": {"observedGeneration": gen, "conditions": [ready]}}
            url = f"{base}/{obj['metadata']['name']}/status"
            headers = {"Content-Type": "application/merge-patch+json"}
            async with session.patch(url, data=json.dumps(patch), headers=headers) as r:
                await r.read()

        announced = False
        while True:
            async with session.get(base) as resp:
                if resp.status != 200:  # e.g. the resource is not served yet: list again
                    await resp.read()
                    await asyncio.sleep(0.1)
                    continue
                listing = await resp.json()
            version = listing["metadata"]["resourceVersion"]
            for obj in listing["items"]:
                await answer(obj)
            while True:  # watch until the server refuses the version: then list afresh
                params = {"watch": "1", "resourceVersion": version, "allowWatchBookmarks": "1"}
                async with session.get(base, params=params) as resp:
                    if resp.status != 200:
                        await resp.read()
                        break
                    if not announced:
                        print("watching", flush=True)
                        announced = True
                    async for line in resp.content:
                        event = json.loads(line)
                        obj = event["object"]
                        if event["type"] == "ERROR":
                            break
                        version = obj["metadata"]["resourceVersion"]
                        if event["type"] in ("ADDED", "MODIFIED"):
                            await answer(obj)
                    else:
                        continue  # the server ended the watch: resume from `version`
                break  # an ERROR event: list again


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
