"""A Prometheus scrape endpoint that strangers cannot exhaust (the bot's and each worker's).

It lives beside the wire protocol because both sides serve it: the bot may import nothing of the
engine but ``engine.protocol`` (tests/test_protocol.py holds that line).

``prometheus_client.start_http_server`` gives every connection a thread and no timeout: 1 000
idle connections held 1 000 threads and descriptors for good, and the process then failed to
open files. Here at most ``MAX_CONNECTIONS`` are served at once (more are closed at once) and a
connection that sends nothing for ``IDLE_SECONDS`` is closed. Written on the standard library's
WSGI server around ``prometheus_client.make_wsgi_app``: the library has no bounded server.
"""

from __future__ import annotations

import socket
import threading
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

MAX_CONNECTIONS = 16  # a scraper needs one; a few operators' tools a few more
IDLE_SECONDS = 5.0  # a connection that sends nothing for this long is closed


class _Handler(WSGIRequestHandler):
    timeout = IDLE_SECONDS

    def log_message(self, format, *args) -> None:  # scrapes are not news
        pass


class _BoundedServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True

    def __init__(self, *args, **kwargs) -> None:
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address) -> None:
        if not self.slots.acquire(blocking=False):  # all slots busy: this one is closed, not queued
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


def serve_scrapes(registry: CollectorRegistry, host: str, port: int) -> WSGIServer:
    """Serve ``registry`` at ``http://host:port/metrics`` on a daemon thread; the server (its
    ``server_port`` is the port bound, for port 0)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server_class = type("_Server", (_BoundedServer,), {"address_family": family})
    server = make_server(host, port, make_wsgi_app(registry), server_class, handler_class=_Handler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
