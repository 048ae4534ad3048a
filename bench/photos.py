"""Real face photos for benchmarks, all offline-reproducible: skimage's astronaut,
matplotlib's Grace Hopper, and the two test images inside the ``insightface`` 0.7.3
source package on PyPI (a 112-px Tom Hanks crop and ``t1.jpg``, a group photo of six).

The sdist is fetched once from the package registry (SHA-256 pinned, cached under
``~/.cache/wspace``) and never committed; nothing in the engine or tests needs it.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

from tests.photos import astronaut, grace_hopper

INSIGHTFACE_SDIST = ("https://files.pythonhosted.org/packages/0b/8d/0f4af90999ca96cf8cb846eb5ae27c5ef5b390f9c090dd19e4fa76364c13/"
                     "insightface-0.7.3.tar.gz")
INSIGHTFACE_SHA256 = "f191f719612ebb37018f41936814500544cd0f86e6fcd676c023f354c668ddf7"
CACHE = Path.home() / ".cache" / "wspace"


def insightface_images() -> dict[str, np.ndarray]:
    """``{"tom_hanks": ..., "t1_group": ...}`` as RGB arrays."""
    path = CACHE / "insightface-0.7.3.tar.gz"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        data = urllib.request.urlopen(INSIGHTFACE_SDIST, timeout=60).read()
        path.write_bytes(data)
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != INSIGHTFACE_SHA256:
        path.unlink()
        raise RuntimeError("the insightface sdist does not match its pinned SHA-256")
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for key, name in (("tom_hanks", "Tom_Hanks_54745.png"), ("t1_group", "t1.jpg")):
            member = tar.getmember(f"insightface-0.7.3/insightface/data/images/{name}")
            out[key] = np.asarray(Image.open(tar.extractfile(member)).convert("RGB"))
    return out


def real_faces(size: int, framing) -> dict[str, np.ndarray]:
    """Every real face available, FFHQ-aligned at ``size``: the astronaut, Grace Hopper,
    Tom Hanks and each face dlib finds in the group photo."""
    from engine.face.align import align_face, align_from_landmarks, detect_faces

    photos = {"astronaut": astronaut(), "grace_hopper": grace_hopper(), **insightface_images()}
    faces = {}
    for name, img in photos.items():
        if name == "t1_group":
            for i, f in enumerate(detect_faces(img)):
                faces[f"t1_face{i}"] = align_from_landmarks(img, f.landmarks, size, framing)
        elif name == "tom_hanks":  # a tight 112-px crop: dlib needs some room around it
            padded = np.pad(img, ((48, 48), (48, 48), (0, 0)), mode="edge")
            faces[name] = align_face(padded, size, framing).image
        else:
            faces[name] = align_face(img, size, framing).image
    return faces
