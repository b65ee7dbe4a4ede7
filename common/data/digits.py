"""The embedded default data: scikit-learn's handwritten digits, upscaled to RGB images.

scikit-learn ships the 1,797 8x8 greyscale digits inside the package, so the default
bundle can be trained and demonstrated with no download. The split is fixed by a seed
and shared by training (train part) and the demo's sample images (held-back part), so
the demo never shows the model an image it was trained on.
"""
from __future__ import annotations

import numpy as np

DIGITS_CLASS_NAMES = [str(i) for i in range(10)]
DIGITS_SPLIT_SEED = 0          # permutation seed of the train / held-back split
DIGITS_HELDOUT_FRACTION = 0.2  # fraction of the 1,797 digits kept back for evaluation


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Return (images uint8 [N, 8, 8] in 0..255, labels int64 [N])."""
    from sklearn.datasets import load_digits  # scikit-learn is in the demo and train extras

    d = load_digits()
    images = np.clip(np.rint(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    return images, d.target.astype(np.int64)


def split_indices(n: int, heldout_fraction: float = DIGITS_HELDOUT_FRACTION,
                  seed: int = DIGITS_SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (train_idx, heldout_idx) permutation split of range(n)."""
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction: expected a value in (0, 1), got {heldout_fraction!r}")
    perm = np.random.default_rng(seed).permutation(n)
    n_held = int(round(n * heldout_fraction))
    return np.sort(perm[n_held:]), np.sort(perm[:n_held])


def upscale_rgb(images_u8: np.ndarray, size: int) -> np.ndarray:
    """[N, 8, 8] uint8 -> [N, size, size, 3] uint8, bilinear (PIL) so that training and
    the edge's PIL preprocessing see the same pixels."""
    from PIL import Image

    out = np.empty((len(images_u8), size, size, 3), dtype=np.uint8)
    for i, im in enumerate(images_u8):
        pil = Image.fromarray(im).resize((size, size), Image.BILINEAR).convert("RGB")
        out[i] = np.asarray(pil)
    return out
