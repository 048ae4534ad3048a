"""Download published generators with resume, a progress bar and a SHA-256 check."""

from __future__ import annotations

import hashlib
import json
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

CHUNK = 1 << 20


@dataclass(frozen=True)
class KnownModel:
    name: str
    url: str
    sha256: str | None  # None: pinned on first download (trust on first use), see pin file
    description: str


KNOWN_MODELS = {
    "ffhq": KnownModel(
        "ffhq", "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/ffhq.pkl", None,
        "NVIDIA stylegan2-ada-pytorch FFHQ 1024×1024 (config F)"),
}


class FetchError(RuntimeError):
    pass


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, dest: Path, expected_sha256: str | None = None, timeout: float = 30.0,
             progress: bool = True) -> str:
    """Fetch ``url`` into ``dest``, resuming a partial ``dest.part``; returns the SHA-256.

    A mismatching checksum removes the download and raises :class:`FetchError`.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the partial file is already complete
            resp = None
        else:
            raise FetchError(f"download of {url} failed: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise FetchError(f"download of {url} failed: {exc}") from None
    if resp is not None:
        with resp:
            resumed = resp.status == 206
            if not resumed:
                have = 0
            total = resp.headers.get("Content-Length")
            total = int(total) + have if total is not None else None
            with part.open("ab" if resumed else "wb") as f, tqdm(
                    total=total, initial=have, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
                while chunk := resp.read(CHUNK):
                    f.write(chunk)
                    bar.update(len(chunk))
    digest = sha256_of(part)
    if expected_sha256 and digest != expected_sha256.lower():
        part.unlink()
        raise FetchError(
            f"checksum mismatch for {dest.name}: expected {expected_sha256}, got {digest}; the download was removed"
        )
    part.replace(dest)
    return digest


def fetch_known(name: str, models_dir: Path, url: str | None = None, progress: bool = True) -> tuple[Path, str]:
    """Download a known model; its hash is checked against the table or against the pin
    recorded the first time it was downloaded into ``models_dir``."""
    if name not in KNOWN_MODELS:
        raise FetchError(f"unknown model {name!r}; known: {', '.join(KNOWN_MODELS)}")
    known = KNOWN_MODELS[name]
    pin_file = models_dir / "pins.json"
    pins = json.loads(pin_file.read_text()) if pin_file.exists() else {}
    expected = known.sha256 or pins.get(name)
    dest = models_dir / Path(known.url).name
    digest = download(url or known.url, dest, expected, progress=progress)
    if not expected:
        pins[name] = digest
        pin_file.write_text(json.dumps(pins, indent=2))
    return dest, digest
