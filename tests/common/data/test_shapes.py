"""The generated shapes task (rkdsc.common.data.shapes) and its held-back samples."""
from __future__ import annotations

import numpy as np
import pytest

from rkdsc.common.data import shapes


def test_generation_is_deterministic_balanced_and_per_image_seeded():
    a, la = shapes.generate_shapes(24, 40, seed=7)
    b, lb = shapes.generate_shapes(24, 40, seed=7)
    assert a.dtype == np.uint8 and a.shape == (24, 40, 40, 3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert np.bincount(la).tolist() == [3] * 8
    # image i depends only on (seed, i): a longer draw starts with the same images
    c, _ = shapes.generate_shapes(30, 40, seed=7)
    np.testing.assert_array_equal(c[:24], a)
    d, _ = shapes.generate_shapes(24, 40, seed=8)
    assert not np.array_equal(d, a)


def test_train_and_heldout_parts_do_not_share_images():
    train, _ = shapes.generate_shapes(160, 40, shapes.SHAPES_TRAIN_SEED)
    held, _ = shapes.generate_shapes(40, 40, shapes.SHAPES_HELDOUT_SEED)
    seen = {im.tobytes() for im in train}
    assert not any(im.tobytes() in seen for im in held)


def test_the_class_is_in_the_shape_not_in_the_colour():
    """Mean colour carries no class information: per-class mean pixel values agree within noise."""
    images, labels = shapes.generate_shapes(800, 40, seed=3)
    means = np.stack([images[labels == c].reshape(-1, 3).mean(0) for c in range(8)])  # [8, 3]
    assert np.ptp(means, axis=0).max() < 25.0  # 0..255 scale; the per-image spread is about 75


def test_bad_label_is_refused():
    with pytest.raises(ValueError, match=r"label: expected a class index in \[0, 8\), got 8"):
        shapes.draw_shape(8, 40, np.random.default_rng(0))


def test_shapes_samples_folder(tmp_path):
    from rkdsc.common.data.samples import cli, write_shapes_samples

    paths = write_shapes_samples(tmp_path / "s", count=16, size=40)
    assert len(paths) == 16 and sorted({p.parent.name for p in paths}) == sorted(shapes.SHAPES_CLASS_NAMES)
    from PIL import Image

    with Image.open(paths[0]) as im:
        assert im.size == (40, 40) and im.mode == "RGB"
    held, labels = shapes.generate_shapes(16, 40, shapes.SHAPES_HELDOUT_SEED)
    first = tmp_path / "s" / shapes.SHAPES_CLASS_NAMES[labels[0]] / "0000.png"
    np.testing.assert_array_equal(np.asarray(Image.open(first)), held[0])  # PNG is lossless
    assert cli(["--task", "shapes", "--count", "8", "--size", "48", "--out", str(tmp_path / "t")]) == 0
    with Image.open(sorted((tmp_path / "t").rglob("*.png"))[0]) as im:
        assert im.size == (48, 48)
