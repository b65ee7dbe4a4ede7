"""The second embedded task: generated geometric shapes (no download, no files in the repo).

``generate_shapes(n, size, seed) -> (images uint8 [n, size, size, 3], labels int64 [n])``:
eight classes (``SHAPES_CLASS_NAMES``), balanced (image i has label i % 8), each image drawn from
its own ``numpy.random.default_rng([seed, i])`` so any image can be regenerated alone and the
output is the same on every machine: a filled shape of random colour, size (35-85 % of the side),
position and rotation on a random-colour background with two distractor lines and Gaussian
pixel noise (sigma 18 of 255). Drawn at 4x and downsampled (PIL box filter) for anti-aliasing.

Harder than the digits on purpose (the two default tasks differ clearly in difficulty):
pentagon, hexagon and circle differ by a few pixels at 40 px, and colour carries no class
information. The train part is seed ``SHAPES_TRAIN_SEED``, the held-back part (the demo's
sample images, never trained on) seed ``SHAPES_HELDOUT_SEED``: disjoint draws.
"""
from __future__ import annotations

import math

import numpy as np

SHAPES_CLASS_NAMES = ["circle", "triangle", "square", "pentagon", "hexagon", "star", "cross", "ring"]
SHAPES_SIZE = 40            # pixels: the default task's input size (the digits task has 32)
SHAPES_TRAIN_SEED = 0       # seed of the training part
SHAPES_HELDOUT_SEED = 1     # seed of the held-back part (demo samples, final evaluation)
SHAPES_TRAIN_COUNT = 1600   # images in the training part (200 per class)
SHAPES_HELDOUT_COUNT = 400  # images in the held-back part (50 per class)
_SUPERSAMPLE = 4
_NOISE_SIGMA = 18.0


def _polygon(cx: float, cy: float, r: float, n: int, rot: float) -> list[tuple[float, float]]:
    return [(cx + r * math.cos(rot + 2 * math.pi * k / n), cy + r * math.sin(rot + 2 * math.pi * k / n))
            for k in range(n)]


def _star(cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]]:
    pts = []
    for k in range(10):
        rr = r if k % 2 == 0 else 0.45 * r
        a = rot + math.pi * k / 5
        pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
    return pts


def _cross(cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]]:
    w = 0.33 * r
    base = [(-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r), (-w, r), (-w, w), (-r, w), (-r, -w), (-w, -w)]
    c, s = math.cos(rot), math.sin(rot)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in base]


def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, size=3)


def _contrasting(rng: np.random.Generator, other: np.ndarray, min_distance: float = 120.0) -> np.ndarray:
    for _ in range(64):
        c = _colour(rng)
        if float(np.linalg.norm(c.astype(float) - other.astype(float))) >= min_distance:
            return c
    return 255 - other


def draw_shape(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One image of class ``label`` (uint8 [size, size, 3]) drawn with ``rng``."""
    from PIL import Image, ImageDraw

    if not 0 <= label < len(SHAPES_CLASS_NAMES):
        raise ValueError(f"label: expected a class index in [0, {len(SHAPES_CLASS_NAMES)}), got {label}")
    big = size * _SUPERSAMPLE
    bg = _colour(rng)
    fg = _contrasting(rng, bg)
    im = Image.new("RGB", (big, big), tuple(int(v) for v in bg))
    d = ImageDraw.Draw(im)
    for _ in range(2):  # distractor lines, in neither the shape's nor the background's colour
        x0, y0, x1, y1 = (float(v) for v in rng.uniform(0, big, size=4))
        d.line([(x0, y0), (x1, y1)], fill=tuple(int(v) for v in _contrasting(rng, bg, 60.0)),
               width=int(rng.integers(1, 3)) * _SUPERSAMPLE)
    r = big * float(rng.uniform(0.35, 0.85)) / 2
    margin = r * 1.02
    cx = float(rng.uniform(margin, big - margin))
    cy = float(rng.uniform(margin, big - margin))
    rot = float(rng.uniform(0, 2 * math.pi))
    fill = tuple(int(v) for v in fg)
    name = SHAPES_CLASS_NAMES[label]
    if name == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif name == "ring":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        ri = r * float(rng.uniform(0.45, 0.65))
        d.ellipse([cx - ri, cy - ri, cx + ri, cy + ri], fill=tuple(int(v) for v in bg))
    elif name in ("triangle", "square", "pentagon", "hexagon"):
        n = {"triangle": 3, "square": 4, "pentagon": 5, "hexagon": 6}[name]
        d.polygon(_polygon(cx, cy, r, n, rot), fill=fill)
    elif name == "star":
        d.polygon(_star(cx, cy, r, rot), fill=fill)
    else:  # cross
        d.polygon(_cross(cx, cy, r, rot), fill=fill)
    small = np.asarray(im.resize((size, size), Image.BOX), dtype=np.float64)
    noisy = small + rng.normal(0.0, _NOISE_SIGMA, size=small.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def generate_shapes(n: int, size: int = SHAPES_SIZE, seed: int = SHAPES_TRAIN_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [n, size, size, 3], labels int64 [n]); image i has label i % 8 and is drawn
    from ``default_rng([seed, i])``."""
    if n < 0 or size < 8:
        raise ValueError(f"n, size: expected n >= 0 and size >= 8, got {n}, {size}")
    labels = np.arange(n, dtype=np.int64) % len(SHAPES_CLASS_NAMES)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        images[i] = draw_shape(int(labels[i]), size, np.random.default_rng([seed, i]))
    return images, labels


def train_part(size: int = SHAPES_SIZE) -> tuple[np.ndarray, np.ndarray]:
    return generate_shapes(SHAPES_TRAIN_COUNT, size, SHAPES_TRAIN_SEED)


def heldout_part(size: int = SHAPES_SIZE) -> tuple[np.ndarray, np.ndarray]:
    return generate_shapes(SHAPES_HELDOUT_COUNT, size, SHAPES_HELDOUT_SEED)
