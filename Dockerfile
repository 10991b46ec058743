# The operator image. No image is published: build and push your own, then set it in the
# Helm chart (image.repository / image.tag) or the kustomize base
# (`kustomize edit set image ghcr.io/example/vectorschema=...`):
#
#   docker build -t <registry>/vectorschema:0.1.0 .
#   docker push <registry>/vectorschema:0.1.0
#
# The Deployment sets the command (peering, random priority, liveness endpoint); the CMD
# below runs a single replica on its own.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN pip install --no-cache-dir --no-compile --prefix=/install .

FROM python:3.11-slim
COPY --from=build /install /usr/local
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# A numeric user, so that `runAsNonRoot: true` can verify it.
USER 10001:10001
# 8080: Prometheus metrics (VECTORSCHEMA_METRICS_PORT); 8081: kopf's liveness endpoint.
EXPOSE 8080 8081
CMD ["kopf", "run", "-m", "vectorschema.k8s.handlers", "--all-namespaces", "--standalone", \
     "--liveness=http://0.0.0.0:8081/healthz"]
