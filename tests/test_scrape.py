"""The metrics endpoint under idle connections: bounded threads and descriptors, and scrapes
served again once the idlers are dropped (engine/protocol/scrape.py)."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request

from prometheus_client import CollectorRegistry, Counter

from engine.protocol import scrape


def test_idle_connections_cannot_hold_the_endpoint(monkeypatch):
    monkeypatch.setattr(scrape._Handler, "timeout", 1.0)
    registry = CollectorRegistry()
    Counter("wspace_test_things", "things", registry=registry).inc(3)
    server = scrape.serve_scrapes(registry, "127.0.0.1", 0)
    port = server.server_port
    before = threading.active_count()
    idlers = [socket.create_connection(("127.0.0.1", port)) for _ in range(5 * scrape.MAX_CONNECTIONS)]
    try:
        time.sleep(0.3)
        assert threading.active_count() - before <= scrape.MAX_CONNECTIONS, "one thread per slot at most"
        for s in idlers:
            s.settimeout(3.0)
        closed = sum(s.recv(1) == b"" for s in idlers)
        assert closed == len(idlers), "every idle connection is closed: at once past the slots, else after the timeout"
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert "wspace_test_things_total 3.0" in text
    finally:
        for s in idlers:
            s.close()
        server.shutdown()
        server.server_close()
