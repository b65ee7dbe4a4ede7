"""One reading path for image files: regular files only, a decompression-bomb guard, and one
exception type (ImageReadError, an OSError naming the file) for every read failure."""
from __future__ import annotations

import io
import os
import struct
import threading
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from rkdsc.common.data import images as images_mod
from rkdsc.common.data.images import (READ_ERRORS, ImageReadError, iter_batches, list_images, load_rgb,
                                      open_image)

SPEC = {"size": 4, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="os.mkfifo is POSIX only")


def _good(path, value=(10, 20, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (6, 5), value).save(path)
    return path


def bomb_png(path, width: int, height: int):
    """A valid 1x1 PNG whose IHDR claims width x height (CRC fixed): Pillow reads the header
    and would try to allocate width * height pixels."""
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, format="PNG")
    b = bytearray(buf.getvalue())
    assert b[12:16] == b"IHDR"
    b[16:24] = struct.pack(">II", width, height)
    b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])) & 0xFFFFFFFF)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(b))
    return path


def _no_bomb_warning(record):
    assert not [w for w in record if issubclass(w.category, Image.DecompressionBombWarning)]


def _within(seconds, fn):
    """fn() in a thread; fails (instead of hanging the test run) when it blocks."""
    out = {}

    def run():
        try:
            out["v"] = fn()
        except BaseException as exc:  # re-raised in the test's thread
            out["e"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"{fn} blocked for more than {seconds} s"
    if "e" in out:
        raise out["e"]
    return out["v"]


def test_read_errors_is_the_one_public_type():
    assert READ_ERRORS == (ImageReadError,)
    assert issubclass(ImageReadError, OSError)  # callers that catch OSError keep working
    e = ImageReadError("/x/a.png", "why")
    assert str(e) == "/x/a.png: why" and e.reason == "why" and e.path.name == "a.png"
    import pickle
    assert str(pickle.loads(pickle.dumps(e))) == str(e)


@pytest.mark.parametrize("w,h", [(30000, 30000),   # > 2x Pillow's limit: Pillow raises DecompressionBombError
                                 (10000, 10000)])  # between 1x and 2x: Pillow only warns and would decode
def test_bomb_header_is_refused_naming_file_and_claimed_size(tmp_path, w, h):
    path = bomb_png(tmp_path / "bomb.png", w, h)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        with pytest.raises(ImageReadError) as ei:
            load_rgb(path)
        with pytest.raises(ImageReadError):
            with open_image(path):
                pass
    msg = str(ei.value)
    assert msg.startswith(f"{path}: ")
    assert f"{w} x {h} = {w * h:,} pixels" in msg and "decompression-bomb" in msg
    assert f"{images_mod.MAX_IMAGE_PIXELS:,}" in msg
    _no_bomb_warning(record)


def test_size_limit_is_ours_and_pillows_error_is_converted(tmp_path, monkeypatch):
    path = _good(tmp_path / "small.png")  # 6 x 5
    assert load_rgb(path).size == (6, 5)
    monkeypatch.setattr(images_mod, "MAX_IMAGE_PIXELS", 29)
    with pytest.raises(ImageReadError, match=r"small\.png: image claims 6 x 5 = 30 pixels, more than the limit of 29"):
        load_rgb(path)
    # Pillow's own guard (a smaller Image.MAX_IMAGE_PIXELS) comes out as the same type, with the size
    monkeypatch.setattr(images_mod, "MAX_IMAGE_PIXELS", 10**9)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # 30 > 2 * 10: DecompressionBombError
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        with pytest.raises(ImageReadError, match=r"small\.png: image claims 6 x 5 = 30 pixels"):
            load_rgb(path)
    _no_bomb_warning(record)


def test_every_read_failure_is_one_type_naming_the_file(tmp_path, monkeypatch):
    (tmp_path / "garbage.jpg").write_bytes(b"this is not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (9, 9, 9)).save(buf, format="JPEG")
    (tmp_path / "truncated.jpg").write_bytes(buf.getvalue()[:200])
    (tmp_path / "folder.png").mkdir()
    for name in ("garbage.jpg", "empty.png", "truncated.jpg", "folder.png", "missing.png"):
        with pytest.raises(ImageReadError) as ei:
            load_rgb(tmp_path / name)
        assert str(ei.value).startswith(str(tmp_path / name) + ": "), str(ei.value)
        assert "<_io." not in str(ei.value)
    # whatever a broken format plugin raises (here: struct.error, ZeroDivisionError, MemoryError)
    good = _good(tmp_path / "good.png")
    for exc in (struct.error("unpack requires a buffer"), ZeroDivisionError("division by zero"), MemoryError()):
        def boom(*a, _exc=exc, **k):
            raise _exc
        monkeypatch.setattr(Image, "open", boom)
        with pytest.raises(ImageReadError, match=rf"good\.png: {type(exc).__name__}"):
            load_rgb(good)
    monkeypatch.undo()
    assert load_rgb(good).mode == "RGB"


@needs_fifo
@pytest.mark.parametrize("layout", ["classes", "flat"])
@pytest.mark.parametrize("check", [True, False])
def test_fifo_is_listed_as_an_error_and_never_opened(tmp_path, layout, check):
    folder = tmp_path / "a" if layout == "classes" else tmp_path
    _good(folder / "one.png")
    _good(folder / "two.png")
    os.mkfifo(folder / "pipe.png")  # nobody ever writes to it: open() for reading would block
    listing = _within(10, lambda: list_images(tmp_path, check=check))
    assert [p.name for p in listing.paths] == ["one.png", "two.png"]
    assert [(p.name, why) for p, why in listing.errors] == [
        ("pipe.png", "not a regular file (named pipe (FIFO)); skipped, never opened")]
    batches = _within(10, lambda: list(iter_batches(listing, SPEC)))
    assert [p.name for b in batches for p in b[2]] == ["one.png", "two.png"]
    # reading it directly (a listing made before the FIFO appeared) is refused at once
    with pytest.raises(ImageReadError, match=r"pipe\.png: not a regular file \(named pipe \(FIFO\)\)"):
        _within(10, lambda: load_rgb(folder / "pipe.png"))


@needs_fifo
def test_dangling_link_and_fifo_at_the_root_are_reported(tmp_path):
    _good(tmp_path / "cls" / "ok.png")
    os.symlink(tmp_path / "nowhere.png", tmp_path / "cls" / "dangling.png")
    os.mkfifo(tmp_path / "stray-pipe")
    listing = _within(10, lambda: list_images(tmp_path))
    assert [p.name for p in listing.paths] == ["ok.png"]
    why = {p.name: w for p, w in listing.errors}
    assert why["dangling.png"].startswith("cannot stat")
    assert "named pipe" in why["stray-pipe"]


@needs_fifo
def test_a_folder_with_a_bomb_and_a_fifo_keeps_every_good_image(tmp_path):
    for i in range(3):
        _good(tmp_path / "x" / f"good{i}.png", (i, i, i))
    bomb_png(tmp_path / "x" / "bomb.png", 30000, 30000)
    os.mkfifo(tmp_path / "x" / "fifo.png")
    listing = list_images(tmp_path, check=False)  # what the edge does: no probing at listing time
    got = [p.name for b in _within(10, lambda: list(iter_batches(listing, SPEC))) for p in b[2]]
    assert got == ["good0.png", "good1.png", "good2.png"]
    why = {p.name: w for p, w in listing.errors}
    assert "30000 x 30000" in why["bomb.png"] and why["bomb.png"].startswith("unreadable image: ")
    assert "named pipe" in why["fifo.png"]
    assert np.isfinite(np.concatenate([b[0] for b in iter_batches(list_images(tmp_path), SPEC)])).all()
