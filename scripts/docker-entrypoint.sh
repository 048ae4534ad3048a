#!/bin/sh
# The image's entry point: on first start, write a config where WSPACE_CONFIG points (the
# example's keys and comments, engine.device = "cuda"; with WSPACE_REDIS_URL, the Redis
# transport) with the project's own TOML-aware code, check that its folder is writable, then
# run `wspace "$@"`. Nothing from the environment passes through the shell into the file.
set -eu
if [ "${1:-serve}" = "serve" ] && [ -n "${WSPACE_CONFIG:-}" ]; then
  wspace init-config "$WSPACE_CONFIG" --device "${WSPACE_DEVICE:-cuda}" \
    --example "${WSPACE_EXAMPLE_CONFIG:-/app/config.example.toml}"
fi
exec wspace "$@"
