"""Faces between faces that stay people: the landmark-aligned morph a blend is projected onto.

A straight line in W+ between two members' kept faces leaves the generator's face space on
the way: the midpoint of two faces whose pose or expression differ draws doubled eyes, smeared
mouths and blotches (``bench/survive.py`` measures and shows it). What a person expects between
two faces is the classic morph: both faces warped to their landmarks' weighted mean shape, then
cross-dissolved, so every feature has one place. That image is the target; the blend in W+ is
the start; a short projection finds the latent that draws it. The result is a kept face like any
other (W+ and noise maps, redrawn exactly), and it stays a face because the generator draws it.

Pure numpy and scipy: the warp is piecewise affine over a Delaunay mesh of the 68 landmarks plus
the frame's border, sampled bilinearly. Dissolving two faces whose features never line up to the
pixel averages away their fine detail (eyelids, lips, hair strands): the target gets it back with
an unsharp mask (Pillow's), so the projection aims at a face as crisp as its parents.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter
from scipy.spatial import Delaunay

BETWEEN_STEPS = 50  # projection steps from the W+ blend to the morph: judge ratio 0.792 at 50, 0.795 at 100
SHARPEN = 60  # unsharp-mask percent on a dissolve, radius one pixel per 64 (bench/between.py measures it)


def frame_points(size: int) -> np.ndarray:
    """Eight points on the frame's border, so the mesh covers the whole image."""
    e = size - 1
    h = e / 2
    return np.array([[0, 0], [h, 0], [e, 0], [0, h], [e, h], [0, e], [h, e], [e, e]], np.float64)


def _bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    x = np.clip(x, 0, w - 1)
    y = np.clip(y, 0, h - 1)
    x0 = np.minimum(np.floor(x).astype(int), w - 2)
    y0 = np.minimum(np.floor(y).astype(int), h - 2)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    top = img[y0, x0] * (1 - fx) + img[y0, x0 + 1] * fx
    bottom = img[y0 + 1, x0] * (1 - fx) + img[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def warp(img: np.ndarray, src: np.ndarray, dst: np.ndarray, mesh: Delaunay) -> np.ndarray:
    """``img`` warped so that its points ``src`` land on ``dst`` (``[P, 2]``, x then y); ``mesh``
    triangulates ``dst``. Float ``[H, W, C]`` out."""
    h, w = img.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w]
    pixels = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
    tri = mesh.find_simplex(pixels)
    tri = np.where(tri < 0, mesh.find_simplex(np.clip(pixels, 0, [w - 1, h - 1])), tri)
    tri = np.maximum(tri, 0)
    transform = mesh.transform[tri]  # barycentric coordinates of each pixel in its triangle
    bary = np.einsum("nij,nj->ni", transform[:, :2], pixels - transform[:, 2])
    bary = np.concatenate([bary, 1 - bary.sum(axis=1, keepdims=True)], axis=1)
    corners = src[mesh.simplices[tri]]  # [N, 3, 2]: the same triangle in the source image
    at = np.einsum("ni,nij->nj", bary, corners)
    return _bilinear(img.astype(np.float64), at[:, 0], at[:, 1]).reshape(h, w, -1)


def sharpened(img: np.ndarray, percent: int = SHARPEN) -> np.ndarray:
    """``img`` (``[H, W, 3]`` uint8) with an unsharp mask of ``percent`` (0: itself)."""
    if percent <= 0:
        return img
    radius = max(1.0, img.shape[0] / 64)
    return np.asarray(Image.fromarray(img).filter(ImageFilter.UnsharpMask(radius, percent, 0)))


def morph(images: list[np.ndarray], points: list[np.ndarray], weights, sharpen: int = 0) -> np.ndarray:
    """The landmark-aligned morph of ``images`` (``[H, W, 3]`` uint8, their landmarks ``[68, 2]``
    in pixels) with ``weights`` (summing to one): each warped to the weighted mean shape, then
    cross-dissolved; a dissolve of two or more faces sharpened by ``sharpen`` percent
    (:func:`sharpened`). ``[H, W, 3]`` uint8."""
    weights = np.asarray(weights, np.float64)
    size = images[0].shape[0]
    border = frame_points(size)
    pts = [np.concatenate([np.asarray(p, np.float64), border]) for p in points]
    shape = sum(wt * p for wt, p in zip(weights, pts))
    mesh = Delaunay(shape)
    out = sum(wt * warp(img, p, shape, mesh) for wt, img, p in zip(weights, images, pts) if wt > 0)
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return sharpened(out, sharpen) if np.count_nonzero(weights) > 1 else out
