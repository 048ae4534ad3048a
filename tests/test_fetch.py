"""`wspace model fetch`: resumable download, SHA-256 check, import — against a local server."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest
import torch

from engine.model.checkpoints import load_generator
from engine.model.fetch import FetchError, download, fetch_known


class RangeHandler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    requests: list[str | None] = []

    def do_GET(self):  # noqa: N802
        body = self.files.get(self.path)
        rng = self.headers.get("Range")
        self.requests.append(rng)
        if body is None:
            self.send_error(404)
            return
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        if start >= len(body):
            self.send_error(416)
            return
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    RangeHandler.files, RangeHandler.requests = {}, []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_download_resumes_a_partial_file(tmp_path, server):
    _, base = server
    body = bytes(range(256)) * 4000
    RangeHandler.files["/m.bin"] = body
    dest = tmp_path / "m.bin"
    Path(str(dest) + ".part").write_bytes(body[:1000])
    digest = download(f"{base}/m.bin", dest, hashlib.sha256(body).hexdigest(), progress=False)
    assert dest.read_bytes() == body and digest == hashlib.sha256(body).hexdigest()
    assert RangeHandler.requests == ["bytes=1000-"]


def test_checksum_mismatch_removes_the_download(tmp_path, server):
    _, base = server
    RangeHandler.files["/m.bin"] = b"tampered"
    with pytest.raises(FetchError, match="checksum mismatch"):
        download(f"{base}/m.bin", tmp_path / "m.bin", "0" * 64, progress=False)
    assert not (tmp_path / "m.bin").exists() and not (tmp_path / "m.bin.part").exists()


def test_unreachable_server_is_a_clear_error(tmp_path):
    with pytest.raises(FetchError, match="failed"):
        download("http://127.0.0.1:9/none.pkl", tmp_path / "x", progress=False, timeout=2)


def test_fetch_ffhq_pins_then_checks_and_imports(tmp_path, server, ada_pkl):
    _, base = server
    RangeHandler.files["/ffhq.pkl"] = ada_pkl.read_bytes()
    path, digest = fetch_known("ffhq", tmp_path, url=f"{base}/ffhq.pkl", progress=False)
    assert digest == hashlib.sha256(ada_pkl.read_bytes()).hexdigest()
    G = load_generator(path)
    assert G.num_ws == 8
    # A later download that differs from the pinned hash is refused.
    RangeHandler.files["/ffhq.pkl"] = ada_pkl.read_bytes()[:-1] + b"!"
    path.unlink()
    with pytest.raises(FetchError, match="checksum mismatch"):
        fetch_known("ffhq", tmp_path, url=f"{base}/ffhq.pkl", progress=False)


def test_cli_model_fetch_writes_a_native_model(tmp_path, server, ada_pkl):
    from typer.testing import CliRunner

    from engine.cli.commands import app

    _, base = server
    RangeHandler.files["/ffhq.pkl"] = ada_pkl.read_bytes()
    result = CliRunner().invoke(app, ["model", "fetch", "ffhq", "--dir", str(tmp_path), "--url", f"{base}/ffhq.pkl"])
    assert result.exit_code == 0, result.output
    native = load_generator(tmp_path / "ffhq.safetensors")
    ref = load_generator(ada_pkl)
    z = torch.randn(2, 64)
    with torch.no_grad():
        assert torch.equal(native(z), ref(z))
