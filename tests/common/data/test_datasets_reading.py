"""Training image folders read through the edge's reading path (rkdsc.common.data.images)."""
from __future__ import annotations

import logging
import os

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torch")
from rkdsc.common.data import datasets  # noqa: E402

from .test_image_reading import bomb_png  # noqa: E402


def _img(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), value).save(path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="os.mkfifo is POSIX only")
def test_training_folder_skips_fifo_bomb_and_annotations(tmp_path, caplog):
    for c, v in (("cat", 10), ("dog", 200)):
        for i in range(3):
            _img(tmp_path / c / f"{i}.png", (v, v, v))
    (tmp_path / "dog" / "dog_boxes.txt").write_text("annotations, not an image\n")
    os.mkfifo(tmp_path / "cat" / "pipe.png")
    bomb_png(tmp_path / "dog" / "bomb.png", 30000, 30000)
    files, labels, classes = datasets.list_class_folder(tmp_path)
    assert classes == ["cat", "dog"]
    assert [f"{f.parent.name}/{f.name}" for f in files] == [
        "cat/0.png", "cat/1.png", "cat/2.png", "dog/0.png", "dog/1.png", "dog/2.png", "dog/bomb.png"]
    assert labels.tolist() == [0, 0, 0, 1, 1, 1, 1]
    with caplog.at_level(logging.WARNING, logger="rkdsc.data"):
        images, labels_kept, keep, _ = datasets._load_folder(tmp_path, 4, 0, seed=0)
    assert images.shape == (6, 4, 4, 3) and images.dtype == np.uint8
    assert keep.tolist() == [0, 1, 2, 3, 4, 5] and labels_kept.tolist() == [0, 0, 0, 1, 1, 1]
    assert images[:3].max() == 10 and images[3:].min() == 200
    text = caplog.text
    assert "pipe.png" in text and "named pipe" in text
    assert "bomb.png" in text and "30000 x 30000" in text


def test_training_folder_with_nothing_readable_is_an_error(tmp_path):
    bomb_png(tmp_path / "a" / "x.png", 30000, 30000)
    with pytest.raises(ValueError, match="none of the 1 images could be read"):
        datasets._load_folder(tmp_path, 4, 0, seed=1)


def test_tiny_imagenet_keeps_its_wnids_as_class_ids_next_to_the_words(tmp_path):
    """build_datasets names the classes by their words (classes.tsv); class_ids gives the wnid
    folders index by index, which export writes into the manifest (so a folder laid out by
    wnids evaluates without renaming)."""
    from rkdsc.common.train.presets import load_preset

    train = tmp_path / "tiny" / "train"
    for wnid, v in (("n01443537", 30), ("n01629819", 220)):
        for i in range(4):
            _img(train / wnid / f"{wnid}_{i}.JPEG", (v, v, v))
    (tmp_path / "tiny" / "classes.tsv").write_text("n01443537\tgoldfish, Carassius auratus\n"
                                                   "n01629819\tEuropean fire salamander\n")
    preset = load_preset("smoke", {"data.dataset": "tinyimagenet", "data.root": str(train),
                                   "data.input_size": 32, "data.val_fraction": 0.25})
    _, _, names = datasets.build_datasets(preset)
    assert names == ["goldfish", "European fire salamander"]
    assert datasets.class_ids(preset) == ["n01443537", "n01629819"]
