#!/bin/sh
# The image's entry point: on first start, put a config with engine.device = "cuda" (the
# example's keys and comments) where WSPACE_CONFIG points, then run `wspace "$@"`.
set -eu
if [ "${1:-serve}" = "serve" ] && [ -n "${WSPACE_CONFIG:-}" ] && [ ! -e "$WSPACE_CONFIG" ]; then
  mkdir -p "$(dirname "$WSPACE_CONFIG")"
  # With WSPACE_REDIS_URL (docker compose), the bot sends jobs to Redis workers instead.
  sed -e 's/^device = "cpu" /device = "cuda"/' \
      ${WSPACE_REDIS_URL:+-e "s|^transport = \"local\" |transport = \"redis\" |"} \
      ${WSPACE_REDIS_URL:+-e "s|^# redis_url = \"[^\"]*\"|redis_url = \"$WSPACE_REDIS_URL\"|"} \
      "${WSPACE_EXAMPLE_CONFIG:-/app/config.example.toml}" > "$WSPACE_CONFIG"
  echo "wrote $WSPACE_CONFIG from the example (engine.device = \"cuda\"); edit it and restart" >&2
fi
exec wspace "$@"
