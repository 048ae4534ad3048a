# wspace on a CUDA GPU host (also runs on a CPU-only host, slowly).
# Build:  docker build -t wspace .
# Run:    mkdir -p data && sudo chown 10001:10001 data   # the container runs as user 10001
#         docker run --gpus all -e WSPACE_TOKEN=... -v $PWD/data:/data wspace
#         (config: /data/config.toml, written from the image's example on first start
#          if absent; the database lives beside it in /data. Or keep your own ownership:
#          docker run --user "$(id -u):$(id -g)" ...)
# Worker: docker run --gpus all -e WSPACE_REDIS_SECRET=... wspace worker --redis redis://HOST:6379/0
# Bot + Redis + a GPU worker: docker compose up (compose.yaml, docs/scaling.md)
#
# torch comes from PyPI: its Linux x86_64 wheels bundle CUDA, so the host needs only the
# NVIDIA driver and the container toolkit. Pinned at 2.13.0 (past the weights_only
# advisories of the 2.5 line this image used to carry).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    WSPACE_CONFIG=/data/config.toml WSPACE_DEVICE=cuda

RUN pip install "torch==2.13.0"
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY engine ./engine
COPY migrations ./migrations
COPY config.example.toml scripts/docker-entrypoint.sh ./
# the project itself, at this commit (its own deps are ranges by design; torch is pinned above)
# hadolint ignore=DL3013
RUN pip install ".[redis]" \
    && useradd --create-home --uid 10001 --user-group wspace && mkdir -p /data && chown 10001:10001 /data

USER 10001:10001
VOLUME /data
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 CMD ["wspace", "health"]
ENTRYPOINT ["/app/docker-entrypoint.sh"]
CMD ["serve"]
