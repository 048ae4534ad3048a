"""Decode a member's photo, find the face with dlib, and align it the way FFHQ was aligned.

Alignment follows the FFHQ procedure as published with the dataset: an oriented square
("quad") built from the eye centres and the eye-to-eye and eye-to-mouth vectors; shrink
very large photos first; crop with a border; where the quad leaves the photo, pad by
reflection and blur the padding towards the photo's median colour; sample the quad;
Lanczos-resize to the model's resolution.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from scipy.ndimage import gaussian_filter

from engine.face.containers import MAX_JPEG_SEGMENTS, jpeg_segments, strip_metadata
from engine.protocol.errors import BadArgument, CraftedUpload, ImageTooLarge, NoFaceFound, NotAnImage

MAX_BYTES = 10 * 1024 * 1024
MAX_PIXELS = 40_000_000
MAX_WEBP_PIXELS = 16_000_000  # libwebp decodes into a buffer of its own, then Pillow copies it: 40 MP of
# lossy RGBA cost 1 056 MiB above the engine, past the 1 GiB bound (tests/test_bad_input.py measures it)
DETECT_MAX_SIDE = 1024  # faces are searched on a copy no larger than this
MAX_ASPECT = 8  # a photo of a face is at most this many times as long as it is wide
MIN_PHOTO_SIDE = 40  # the smallest face we align (MIN_FACE_SIDE) cannot fit in less
TRANSFORM_MIN = 256  # the quad is sampled at least this large before the final resize


def dlib_model_path(name: str) -> Path:
    """A ``.dat`` file of ``face-recognition-models``, found without importing the package
    (its ``__init__`` imports ``pkg_resources``, which current setuptools removed)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("face alignment needs `pip install face-recognition-models`")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from face-recognition-models")
    return path


# dlib's detector, predictor and descriptor network are not safe to call from two threads at
# once (concurrent calls crash the process or return wrong landmarks); the engine runs
# several jobs in threads when it batches (engine/serving/scheduler.py), so every call holds this.
DLIB_LOCK = threading.RLock()


@functools.lru_cache(maxsize=None)
def _dlib():
    import dlib

    return (dlib, dlib.get_frontal_face_detector(),
            dlib.shape_predictor(str(dlib_model_path("shape_predictor_68_face_landmarks.dat"))))


@functools.lru_cache(maxsize=None)
def _cnn_detector():
    import dlib

    return dlib.cnn_face_detection_model_v1(str(dlib_model_path("mmod_human_face_detector.dat")))


# The HOG detector also fires on things that are not faces (the mission patch on the
# astronaut's sleeve scores 0.117; real faces in photos 0.9-1.5, bench/detector.py). A
# detection below HOG_SURE is kept only when dlib's CNN detector finds a face in the same
# place too (about 0.23 s a check on the CPU, so only the uncertain ones are checked).
HOG_SURE = 0.6
MAX_CNN_CHECKS = 8  # uncertain finds checked by the CNN per photo, the likeliest first (~0.23 s each)
MAX_DETECTIONS = 96  # finds of one photo looked at, the likeliest first (a team holds at most 32 faces)
CNN_FACE_PX = 100  # the box is scaled to about this many pixels for the CNN (it finds faces from ~80 px)
CNN_MIN_CONFIDENCE = 0.3


def cnn_confirms(img: np.ndarray, box: tuple[int, int, int, int]) -> bool:
    """Whether the CNN detector finds a face around ``box`` (left, top, right, bottom) of ``img``."""
    left, top, right, bottom = box
    w, h = max(1, right - left), max(1, bottom - top)
    x0, y0 = max(0, left - w // 2), max(0, top - h // 2)
    x1, y1 = min(img.shape[1], right + w // 2), min(img.shape[0], bottom + h // 2)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return False
    f = CNN_FACE_PX / w
    crop = Image.fromarray(np.ascontiguousarray(img[y0:y1, x0:x1]))
    crop = np.asarray(
        crop.resize((max(1, round((x1 - x0) * f)), max(1, round((y1 - y0) * f))), Image.Resampling.BILINEAR)
    )
    with DLIB_LOCK:
        found = _cnn_detector()(np.ascontiguousarray(crop), 0)
    cx, cy = (left + right) / 2, (top + bottom) / 2  # the face must be the one in the box, not a neighbour
    for d in found:
        r = d.rect
        fx, fy = x0 + (r.left() + r.right()) / 2 / f, y0 + (r.top() + r.bottom()) / 2 / f
        if d.confidence >= CNN_MIN_CONFIDENCE and abs(fx - cx) < w / 2 and abs(fy - cy) < h / 2:
            return True
    return False


@functools.lru_cache(maxsize=None)
def _face_encoder():
    import dlib

    return dlib.face_recognition_model_v1(str(dlib_model_path("dlib_face_recognition_resnet_model_v1.dat")))


# --- decoding ------------------------------------------------------------------------------


MAX_JPEG_SCANS = 64  # progressive JPEGs use ~10; a scan bomb uses thousands of tiny ones


def sniff_format(data: bytes) -> str | None:
    """The accepted format these bytes say they are (by their magic bytes), or None."""
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    return None


def check_jpeg_structure(data: bytes) -> None:
    """Refuse, before any decoder reads it, a JPEG whose segments or scans (walked as libjpeg
    walks them, ``engine/face/containers.py``) are far more than any photo's."""
    segments = jpeg_segments(data)
    if (scans := sum(marker == 0xDA for marker, _, _ in segments)) > MAX_JPEG_SCANS:
        many = f"at least {scans}" if len(segments) > MAX_JPEG_SEGMENTS else str(scans)  # the walk stopped early
        raise CraftedUpload(f"That JPEG has {many} scans; a photo has at most {MAX_JPEG_SCANS}, so I won't decode it.")
    if len(segments) > MAX_JPEG_SEGMENTS:
        raise CraftedUpload(
            f"That JPEG has over {MAX_JPEG_SEGMENTS} segments; a photo has a few dozen, so I won't decode it."
        )


def decode_image(data: bytes, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Any photo a member may send -> ``[H, W, 3]`` uint8 RGB, upright (EXIF applied)."""
    if len(data) > max_bytes:
        raise ImageTooLarge(f"That file is {len(data) / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB.")
    if not data:
        raise NotAnImage("That file is empty, not an image.")
    if (fmt := sniff_format(data)) is None:
        raise NotAnImage("That file is not an image I can read (PNG, JPEG, WebP or GIF).")
    if fmt == "JPEG":
        check_jpeg_structure(data)
    data, orientation = strip_metadata(data, fmt)  # no decoder ever parses EXIF, XMP, ICC or text
    try:
        img = Image.open(io.BytesIO(data), formats=[fmt])  # only the decoder its magic bytes name
        if fmt == "WEBP":  # header only: nothing decoded yet
            check_shape(*img.size, min(max_pixels, MAX_WEBP_PIXELS), "WebP image")
        else:
            check_shape(*img.size, max_pixels)
        img.seek(0)  # first frame of an animation
        img.load()
        if orientation in ORIENT:
            img = img.transpose(ORIENT[orientation])
        arr = _to_rgb(img)
    except (ImageTooLarge, NoFaceFound):
        raise
    except Image.DecompressionBombError:
        raise ImageTooLarge(
            f"That image has too many pixels; the limit is {max_pixels / 1e6:.0f} megapixels."
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise NotAnImage("That file is not an image I can read (PNG, JPEG, WebP or GIF).", reason=str(exc)) from None
    return arr


# EXIF orientation -> the transpose that shows the photo upright (as Pillow's exif_transpose)
ORIENT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def check_shape(w: int, h: int, max_pixels: int = MAX_PIXELS, what: str = "image") -> None:
    """Refuse, from the header's size, images too large or shaped so no face fits them."""
    if w * h > max_pixels:
        raise ImageTooLarge(f"That {what} is {w}×{h} pixels; the limit is {max_pixels / 1e6:.0f} megapixels.")
    if min(w, h) < MIN_PHOTO_SIDE:
        raise NoFaceFound(
            f"That image is {w}×{h} pixels, too small to hold a face (at least {MIN_PHOTO_SIDE} pixels each way)."
        )
    if max(w, h) > MAX_ASPECT * min(w, h):
        raise NoFaceFound(
            f"That image is {w}×{h} pixels; a photo of a face is at most {MAX_ASPECT} times as long as it is wide."
        )


def _to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img, dtype=np.float64)
        a = (a / max(a.max(), 1) * 255) if a.max() > 255 else a
        return np.repeat(a.astype(np.uint8)[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.asarray(img.convert("RGB"))


# --- detection -----------------------------------------------------------------------------


@dataclass
class FoundFace:
    box: tuple[int, int, int, int]  # left, top, right, bottom in photo pixels
    landmarks: np.ndarray  # [68, 2] float, photo pixels


def detect_faces(img: np.ndarray, upsample: int = 1) -> list[FoundFace]:
    """All faces, largest first (dlib's HOG detector, its uncertain finds confirmed by dlib's CNN
    detector; 68-point landmarks). At most ``MAX_DETECTIONS`` finds are looked at and
    ``MAX_CNN_CHECKS`` uncertain ones checked, the likeliest first."""
    dlib, detector, predictor = _dlib()
    scale = min(1.0, DETECT_MAX_SIDE / max(img.shape[:2]))
    small = (
        np.asarray(
            Image.fromarray(img).resize(
                (round(img.shape[1] * scale), round(img.shape[0] * scale)), Image.Resampling.BILINEAR
            )
        )
        if scale < 1
        else img
    )
    faces, checks = [], 0
    with DLIB_LOCK:
        rects, scores, _ = detector.run(np.ascontiguousarray(small), upsample, 0.0)
    likeliest = sorted(zip(rects, scores), key=lambda found: -found[1])[:MAX_DETECTIONS]
    for r, score in likeliest:  # bounded: a photo tiled with hundreds of faint faces costs a few checks
        rect = dlib.rectangle(
            round(r.left() / scale), round(r.top() / scale), round(r.right() / scale), round(r.bottom() / scale)
        )
        box = (rect.left(), rect.top(), rect.right(), rect.bottom())
        if score < HOG_SURE:
            checks += 1
            if checks > MAX_CNN_CHECKS or not cnn_confirms(img, box):
                continue  # something face-like that is not a face (a patch, a pattern), or one check too many
        with DLIB_LOCK:
            shape = predictor(img, rect)
        lm = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
        faces.append(FoundFace(box, lm))
    faces.sort(key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]), reverse=True)
    return faces


# --- alignment -----------------------------------------------------------------------------


def ffhq_quad(lm: np.ndarray) -> tuple[np.ndarray, float]:
    """The oriented crop square of FFHQ: 4 corners ``[4, 2]`` and its side length."""
    eye_left, eye_right = lm[36:42].mean(0), lm[42:48].mean(0)
    eye_avg, eye_to_eye = (eye_left + eye_right) / 2, eye_right - eye_left
    mouth_avg = (lm[48] + lm[54]) / 2
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])
    return quad, float(np.hypot(*x) * 2)


@dataclass(frozen=True)
class Framing:
    """Where a model draws faces, relative to FFHQ's crop: FFHQ's quad spans ``scale`` of
    the model's frame and its centre sits at ``(0.5 + dx, 0.5 + dy)`` of the frame.
    FFHQ-trained models have the identity framing."""

    scale: float = 1.0
    dx: float = 0.0
    dy: float = 0.0

    @classmethod
    def from_dict(cls, d: dict | None) -> "Framing":
        return cls(**{k: float(v) for k, v in (d or {}).items() if k in ("scale", "dx", "dy")})


FFHQ_FRAMING = Framing()


def reframe(quad: np.ndarray, framing: Framing) -> np.ndarray:
    """The crop quad that puts a face where ``framing`` says the model draws it."""
    c = quad.mean(0)
    x = (quad[3] - quad[0]) / 2  # half the top edge: along the face's horizontal
    y = (quad[1] - quad[0]) / 2  # half the left edge: along the face's vertical
    c = c - (framing.dx / framing.scale) * 2 * x - (framing.dy / framing.scale) * 2 * y
    x, y = x / framing.scale, y / framing.scale
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def measure_framing(faces: list[np.ndarray], min_faces: int = 20) -> Framing:
    """Calibrate a model's framing from faces it (or its teacher) draws: the mean FFHQ
    quad of the faces dlib finds, relative to the frame."""
    scales, dxs, dys = [], [], []
    for img in faces:
        lm, detected = aligned_landmarks(img)
        if not detected:
            continue
        quad, qsize = ffhq_quad(lm)
        c = quad.mean(0) / DESCRIPTOR_SIZE
        scales.append(qsize / DESCRIPTOR_SIZE)
        dxs.append(c[0] - 0.5)
        dys.append(c[1] - 0.5)
    if len(scales) < min_faces:
        raise ValueError(f"only {len(scales)} faces found; cannot calibrate the framing")
    return Framing(float(np.median(scales)), float(np.median(dxs)), float(np.median(dys)))


def outer_box(quad: np.ndarray) -> tuple[int, int, int, int]:
    """The integer box (left, top, right, bottom) around a quad's corners, outward."""
    return (int(np.floor(quad[:, 0].min())), int(np.floor(quad[:, 1].min())),
            int(np.ceil(quad[:, 0].max())), int(np.ceil(quad[:, 1].max())))


def align_from_landmarks(img: np.ndarray, lm: np.ndarray, size: int, framing: Framing = FFHQ_FRAMING) -> np.ndarray:
    quad, qsize = ffhq_quad(lm)
    if framing != FFHQ_FRAMING:
        quad = reframe(quad, framing)
        qsize = qsize / framing.scale
    pil = Image.fromarray(img)
    shrink = int(np.floor(qsize / size * 0.5))
    if shrink > 1:
        pil = pil.resize((round(pil.width / shrink), round(pil.height / shrink)), Image.Resampling.LANCZOS)
        quad, qsize = quad / shrink, qsize / shrink
    border = max(int(round(qsize * 0.1)), 3)
    crop = outer_box(quad)
    crop = (
        max(crop[0] - border, 0),
        max(crop[1] - border, 0),
        min(crop[2] + border, pil.width),
        min(crop[3] + border, pil.height),
    )
    if crop[2] - crop[0] < pil.width or crop[3] - crop[1] < pil.height:
        pil = pil.crop(crop)
        quad = quad - crop[0:2]
    pad = outer_box(quad)
    pad = (
        max(-pad[0] + border, 0),
        max(-pad[1] + border, 0),
        max(pad[2] - pil.width + border, 0),
        max(pad[3] - pil.height + border, 0),
    )
    if max(pad) > border - 4:
        pil, quad = _pad_reflect_blurred(pil, quad, qsize, pad)
    transform = max(size * 4, TRANSFORM_MIN)
    pil = pil.transform(
        (transform, transform), Image.Transform.QUAD, (quad + 0.5).flatten().tolist(), Image.Resampling.BILINEAR
    )
    return np.asarray(pil.resize((size, size), Image.Resampling.LANCZOS))


def _pad_reflect_blurred(pil: Image.Image, quad: np.ndarray, qsize: float, pad) -> tuple[Image.Image, np.ndarray]:
    pad = np.maximum(pad, int(round(qsize * 0.3)))
    img = np.pad(np.float32(pil), ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), "reflect")
    h, w, _ = img.shape
    y, x, _ = np.ogrid[:h, :w, :1]
    mask = np.maximum(
        1.0 - np.minimum(np.float32(x) / pad[0], np.float32(w - 1 - x) / pad[2]),
        1.0 - np.minimum(np.float32(y) / pad[1], np.float32(h - 1 - y) / pad[3]),
    )
    blur = qsize * 0.02
    img += (gaussian_filter(img, [blur, blur, 0]) - img) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    img += (np.median(img, axis=(0, 1)) - img) * np.clip(mask, 0.0, 1.0)
    return Image.fromarray(np.uint8(np.clip(np.rint(img), 0, 255))), quad + pad[:2]


@dataclass
class AlignedFace:
    image: np.ndarray  # [size, size, 3] uint8
    faces_found: int
    box: tuple[int, int, int, int]


MIN_FACE_SIDE = 40  # pixels across (the detector's box); smaller faces are too small to align well
NO_FACE = "I could not find a face in that photo; try a well-lit, front-facing one."


@dataclass
class FacesInPhoto:
    """Every face of a photo large enough to align, largest first (numbered from 1), and
    the ones skipped, each with its reason."""

    faces: list[FoundFace]
    skipped: list[str]


def faces_in(img: np.ndarray) -> FacesInPhoto:
    found, skipped = [], []
    for face in detect_faces(img):
        side = min(face.box[2] - face.box[0], face.box[3] - face.box[1])
        if side < MIN_FACE_SIDE:
            skipped.append(
                f"a face {side} px across at ({face.box[0]}, {face.box[1]}) is too small to align "
                f"(at least {MIN_FACE_SIDE} px)"
            )
        else:
            found.append(face)
    return FacesInPhoto(found, skipped)


def align_face(img: np.ndarray, size: int, framing: Framing = FFHQ_FRAMING, number: int | None = None) -> AlignedFace:
    """Face ``number`` (1 = the largest, the default) of a photo, FFHQ-aligned (then reframed
    for the model) at ``size``×``size``."""
    found = faces_in(img)
    if not found.faces:
        raise NoFaceFound(
            NO_FACE
            if not found.skipped
            else "The faces in that photo are too small to align; send one where the face is larger."
        )
    if number is not None and not 1 <= number <= len(found.faces):
        raise BadArgument(
            f"That photo has {len(found.faces)} face{'s' if len(found.faces) != 1 else ''}; "
            f"choose a number from 1 to {len(found.faces)}."
        )
    face = found.faces[(number or 1) - 1]
    return AlignedFace(align_from_landmarks(img, face.landmarks, size, framing), len(found.faces), face.box)


def align_all(img: np.ndarray, size: int, framing: Framing = FFHQ_FRAMING) -> tuple[list[AlignedFace], list[str]]:
    """Every face large enough, aligned, largest first; and what was skipped, with reasons."""
    found = faces_in(img)
    if not found.faces:
        raise NoFaceFound(
            NO_FACE
            if not found.skipped
            else "The faces in that photo are too small to align; send one where the faces are larger."
        )
    n = len(found.faces)
    return [
        AlignedFace(align_from_landmarks(img, f.landmarks, size, framing), n, f.box) for f in found.faces
    ], found.skipped


# --- likeness ------------------------------------------------------------------------------

SAME_PERSON = 0.6  # dlib's convention: descriptor distance below this = same person
DESCRIPTOR_SIZE = 256  # small aligned faces are upsampled to this before description


def aligned_shape(aligned: np.ndarray):
    """Upsample an aligned face and fit dlib's 68 landmarks: ``(big image, shape, detected)``.

    The detector runs first; when it finds nothing (tiny or odd faces) the landmarks are
    fitted inside the central box where alignment puts the face.
    """
    dlib, detector, predictor = _dlib()
    big = np.asarray(Image.fromarray(aligned).resize((DESCRIPTOR_SIZE, DESCRIPTOR_SIZE), Image.Resampling.LANCZOS))
    with DLIB_LOCK:
        dets = detector(big, 1)
        if dets:
            rect = max(dets, key=lambda r: r.area())
        else:
            m = DESCRIPTOR_SIZE
            rect = dlib.rectangle(int(0.2 * m), int(0.25 * m), int(0.8 * m), int(0.85 * m))
        return big, predictor(big, rect), bool(dets)


def aligned_landmarks(aligned: np.ndarray) -> tuple[np.ndarray, bool]:
    """68 landmarks ``[68, 2]`` in the upsampled (``DESCRIPTOR_SIZE``) frame, and whether
    the detector found the face."""
    _, shape, detected = aligned_shape(aligned)
    return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64), detected


def face_descriptor(aligned: np.ndarray) -> np.ndarray:
    """dlib's 128-d descriptor of an aligned face."""
    with DLIB_LOCK:
        big, shape, _ = aligned_shape(aligned)
        return np.array(_face_encoder().compute_face_descriptor(big, shape))


def likeness(a: np.ndarray, b: np.ndarray) -> float:
    """dlib descriptor distance between two aligned faces (below 0.6: same person)."""
    return float(np.linalg.norm(face_descriptor(a) - face_descriptor(b)))
