"""A real redis-server on a free local port, and engine workers started as `wspace worker`
processes (for tests/test_redis.py and bench/scale.py)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self, tmp: Path) -> None:
        self.port, self.tmp, self.proc = free_port(), tmp, None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.tmp)], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


SECRET = "9f1c7e2ab4d05863e7a1c94b2df0653a8c17b5e9d2046fa3"  # the tests' bot and workers share it


def start_worker(url: str, name: str, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "WSPACE_REDIS_SECRET": SECRET}
    return subprocess.Popen([sys.executable, "-m", "bot.cli", "worker", "--redis", url, "--id", name, "--threads", "1",
                             *extra], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

