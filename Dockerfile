# The operator image. No image is published: build and push your own, then set it in the
# Helm chart (image.repository / image.tag) or the kustomize base
# (`kustomize edit set image ghcr.io/example/vectorschema=...`):
#
#   docker build -t <registry>/vectorschema:0.1.0 .
#   docker push <registry>/vectorschema:0.1.0
#
# `make image` builds this same file here without a Docker daemon (buildah; tools/image),
# first making debian:bookworm-slim itself from Debian's packages when no registry serves it.
#
# Debian 12's own Python (3.11) in a virtualenv at /opt/vectorschema: the build stage has
# python3-venv and pip; the final stage has python3 and the virtualenv only (no compiler,
# no pip, no package lists, no caches).
#
# The Deployment sets the command (peering, random priority, liveness endpoint); the CMD
# below runs a single replica on its own.

FROM debian:bookworm-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/vectorschema
WORKDIR /src
# The dependencies first, from pyproject.toml alone: a change of the operator's code
# reuses this layer.
COPY pyproject.toml ./
RUN python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' > /tmp/requirements.txt \
 && /opt/vectorschema/bin/pip install --no-cache-dir --no-compile --requirement /tmp/requirements.txt
COPY README.md ./
COPY operator/ operator/
# Then the virtualenv is trimmed to what runs: pip and setuptools leave; so do the test
# suites that wheels ship (numpy's alone are 17 MB) and kubernetes.aio, the client's asyncio
# twin (68 MB with its bytecode), which nothing here imports (kopf speaks to the API itself;
# the operator uses the synchronous client). tests/e2e/test_image.py imports every operator
# module in the image.
# The bytecode is compiled here, with hashes instead of timestamps (the same sources give
# the same files): the root filesystem is read-only at run time, and compiling kopf,
# kubernetes and qdrant-client at every start costs each Pod seconds of CPU (measured: 4 s
# to import the operator with it, 11 s without, on two busy cores) before it can take over.
RUN /opt/vectorschema/bin/pip install --no-cache-dir --no-compile --no-deps . \
 && /opt/vectorschema/bin/pip uninstall --yes pip setuptools \
 && site=$(/opt/vectorschema/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))') \
 && rm -rf "$site/kubernetes/aio" \
 && find "$site" -depth -type d \( -name tests -o -name __pycache__ \) -exec rm -rf {} + \
 && python3 -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/vectorschema/lib

FROM debian:bookworm-slim
# The numeric user gets a name (home: /tmp, the one writable volume): kopf names its peering
# identity after getpass.getuser(), which fails for a uid that /etc/passwd does not know.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/cache/debconf/*-old /var/log/apt /var/log/dpkg.log \
 && echo 'vectorschema:x:10001:10001:vectorschema operator:/tmp:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'vectorschema:x:10001:' >> /etc/group
COPY --from=build /opt/vectorschema /opt/vectorschema
ENV PATH=/opt/vectorschema/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# A numeric user, so that `runAsNonRoot: true` can verify it.
USER 10001:10001
WORKDIR /tmp
# 8080: Prometheus metrics (VECTORSCHEMA_METRICS_PORT); 8081: kopf's liveness endpoint;
# 9443: the admission webhook (VECTORSCHEMA_WEBHOOK_PORT).
EXPOSE 8080 8081 9443
CMD ["kopf", "run", "-m", "vectorschema.k8s.handlers", "--all-namespaces", "--standalone", \
     "--liveness=http://0.0.0.0:8081/healthz"]
