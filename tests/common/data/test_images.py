"""Image folders and preprocessing (Pillow + numpy)."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from rkdsc.common.data.images import iter_batches, list_images, load_rgb, preprocess, preprocess_batch, to_rgb

SPEC = {"size": 4, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.5]}


def _save(path, img, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt)
    return path


def _rgb(value=(10, 20, 30), size=(6, 5)):
    return Image.new("RGB", size, value)


def test_class_subfolders_give_sorted_labels(tmp_path):
    _save(tmp_path / "zebra" / "z1.png", _rgb())
    _save(tmp_path / "cat" / "c2.jpg", _rgb())
    _save(tmp_path / "cat" / "c1.bmp", _rgb())
    _save(tmp_path / "cat" / "nested" / "c3.gif", _rgb().convert("P"))
    _save(tmp_path / "dog" / "image.data", _rgb(), fmt="PNG")  # any Pillow-readable file counts
    (tmp_path / "dog" / ".hidden.png").write_bytes(b"ignored")
    _save(tmp_path / "stray.png", _rgb())  # not inside a class folder
    listing = list_images(tmp_path)
    assert listing.class_names == ["cat", "dog", "zebra"]
    names = [p.name for p in listing.paths]
    assert names == ["c1.bmp", "c2.jpg", "c3.gif", "image.data", "z1.png"]
    assert listing.labels == [0, 0, 0, 1, 2]
    assert [p.name for p, _ in listing.errors] == ["stray.png"]
    assert len(listing) == 5


def test_flat_folder_has_no_labels(tmp_path):
    for i in range(3):
        _save(tmp_path / f"img{i}.png", _rgb((i, i, i)))
    listing = list_images(tmp_path)
    assert listing.labels is None and listing.class_names == []
    assert [p.name for p in listing.paths] == ["img0.png", "img1.png", "img2.png"]
    batches = list(iter_batches(listing, SPEC, batch_size=2))
    assert [b[0].shape for b in batches] == [(2, 3, 4, 4), (1, 3, 4, 4)]
    assert all(b[1] is None for b in batches)


def test_missing_folder_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_images(tmp_path / "nowhere")


def test_unreadable_files_reported_and_skipped(tmp_path):
    _save(tmp_path / "a" / "good.png", _rgb())
    (tmp_path / "a" / "garbage.jpg").write_bytes(b"this is not an image")
    (tmp_path / "a" / "empty.png").write_bytes(b"")
    buf = io.BytesIO()
    _rgb(size=(64, 64)).save(buf, format="JPEG")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "truncated.jpg").write_bytes(buf.getvalue()[:200])  # header fine, data cut
    _save(tmp_path / "b" / "ok.png", _rgb((1, 2, 3)))
    listing = list_images(tmp_path)
    bad_at_listing = {p.name for p, _ in listing.errors}
    assert {"garbage.jpg", "empty.png"} <= bad_at_listing
    assert all("unreadable image" in why for _, why in listing.errors)
    batches = list(iter_batches(listing, SPEC, batch_size=8))  # must not raise
    got = [p.name for b in batches for p in b[2]]
    assert "good.png" in got and "ok.png" in got and "truncated.jpg" not in got
    assert "truncated.jpg" in {p.name for p, _ in listing.errors}  # reported at decode time
    labels = np.concatenate([b[1] for b in batches])
    assert labels.tolist() == [0 if n == "good.png" else 1 for n in got]


def test_greyscale_and_rgba_become_rgb(tmp_path):
    grey = Image.new("L", (3, 2), 77)
    assert to_rgb(grey).mode == "RGB"
    assert np.all(np.asarray(to_rgb(grey)) == 77)
    rgba = Image.new("RGBA", (3, 2), (200, 100, 50, 0))  # fully transparent: colour kept
    assert np.asarray(to_rgb(rgba)).tolist() == [[[200, 100, 50]] * 3] * 2
    grey16 = Image.fromarray(np.full((2, 2), 65535, dtype=np.uint16))
    assert np.all(np.asarray(to_rgb(grey16)) == 255)
    la = Image.new("LA", (2, 2), (9, 128))
    assert np.asarray(to_rgb(la)).tolist() == [[[9, 9, 9]] * 2] * 2
    palette = _rgb((5, 6, 7)).convert("P", palette=Image.Palette.ADAPTIVE)
    assert np.asarray(to_rgb(palette))[0, 0].tolist() == [5, 6, 7]
    # Through files too: a greyscale PNG and an RGBA PNG load as RGB.
    _save(tmp_path / "g.png", grey)
    _save(tmp_path / "r.png", rgba)
    assert load_rgb(tmp_path / "g.png").mode == "RGB" and load_rgb(tmp_path / "r.png").mode == "RGB"
    x = preprocess(grey, SPEC)
    assert x.shape == (3, 4, 4) and x.dtype == np.float32
    for c in range(3):
        np.testing.assert_allclose(x[c], (77 / 255 - SPEC["mean"][c]) / SPEC["std"][c], rtol=1e-6)


def test_preprocess_matches_hand_computation():
    pixels = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3) * 5  # [H, W, 3]
    img = Image.fromarray(pixels, "RGB")
    x = preprocess(img, SPEC)  # no resize: already 4x4
    assert x.shape == (3, 4, 4) and x.dtype == np.float32
    for c in range(3):
        for i in range(4):
            for j in range(4):
                expected = (pixels[i, j, c] / 255.0 - SPEC["mean"][c]) / SPEC["std"][c]
                assert abs(x[c, i, j] - expected) < 1e-6


def test_preprocess_bilinear_resize_by_hand():
    """2x2 -> 4x4 bilinear with half-pixel centres: a 0 / 255 edge becomes 0, 63.75, 191.25, 255."""
    img = Image.fromarray(np.array([[[0] * 3, [255] * 3]] * 2, dtype=np.uint8), "RGB")
    spec = {"size": 4, "mean": [0.0] * 3, "std": [1.0] * 3}
    x = preprocess(img, spec)
    expected_row = np.array([0.0, 63.75, 191.25, 255.0]) / 255.0
    for c in range(3):
        for i in range(4):
            np.testing.assert_allclose(x[c, i], expected_row, atol=0.51 / 255)  # uint8 rounding


def test_preprocess_rectangular_size_and_batch():
    img = _rgb((255, 0, 51), size=(10, 7))
    spec = {"size": [2, 3], "mean": [0.0] * 3, "std": [1.0] * 3}
    x = preprocess(img, spec)
    assert x.shape == (3, 2, 3)
    np.testing.assert_allclose(x[:, 0, 0], [1.0, 0.0, 0.2], atol=1e-6)  # constant colour survives resize
    batch = preprocess_batch([img, img.convert("L")], spec)
    assert batch.shape == (2, 3, 2, 3) and batch.dtype == np.float32
    assert preprocess_batch([], spec).shape == (0, 3, 2, 3)


def test_preprocess_rejects_bad_spec():
    with pytest.raises(ValueError, match="input.std"):
        preprocess(_rgb(), {"size": 4, "mean": [0, 0, 0], "std": [1, 0, 1]})
