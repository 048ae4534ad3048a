# wspace on a CUDA GPU host. Build: docker build -t wspace .
# Run:  docker run --gpus all -v $PWD/data:/data -e WSPACE_CONFIG=/data/config.toml wspace
# A worker on another GPU host: docker run --gpus all wspace worker --redis redis://HOST:6379/0 --device cuda
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY engine ./engine
COPY migrations ./migrations
# torch comes from the CUDA base image (pyproject allows any torch>=2.1); nothing pulls another.
RUN pip install ".[redis]" && pip install --no-deps gan-face-generate==1.1.1

VOLUME /data
ENTRYPOINT ["wspace"]
CMD ["serve", "--config", "/data/config.toml"]
