"""The journey's small fixes: the train summary for any --snr list, a checkpoint teacher's
accuracy text, the teacher label when timm_kwargs change the model."""
from __future__ import annotations

from rkdsc.common.train.pipeline import summary_table, teacher_accuracy_text


def _results(snrs, source="self-trained", val_acc=0.9):
    pts = [{"snr_db": s, "accuracy": 0.5, "n": 50} for s in snrs]
    return {"preset": "p", "eval": {"split": "val", "n": 50, "snrs_db": snrs},
            "teacher": {"name": "vit", "label": "vit (depth=1)", "source": source, "val_acc": val_acc},
            "methods": {"rkd-sc": {"encoder_params": 10, "symbols_per_image": 6,
                                   "accuracy": {"awgn": {"25": None, "-10": None}, "rayleigh": {"25": None, "-10": None}},
                                   "curves": {"awgn": pts, "rayleigh": pts}}},
            "search": {"kdl-darts": {"depths": [1, 1, 1, 1], "selected_params": None, "val_acc": None}}, "wall_s": 1.0}


def test_summary_table_for_a_short_snr_list():
    text = summary_table(_results([-5.0, 20.0]))  # used to raise TypeError (no 25 / -10 dB points)
    assert "AWGN 20 dB 0.500, -5 dB 0.500" in text and "teacher vit (depth=1): val acc 0.9000" in text


def test_checkpoint_teacher_has_no_val_acc_none():
    text = summary_table(_results([-10.0, 25.0], source="/models/clip.safetensors", val_acc=None))
    assert "None" not in text and "not measured (pretrained checkpoint" in text
    assert teacher_accuracy_text({"source": "self-trained", "val_acc": None}) == "val acc n/a"


def test_teacher_label_names_what_changed_the_model():
    from rkdsc.common.models.teacher import build_teacher, teacher_label

    assert teacher_label("resnet18") == "resnet18"
    assert teacher_label("vit_tiny_patch16_224", {"depth": 1}, 32, 224) == "vit_tiny_patch16_224 (img_size=32, depth=1)"
    assert teacher_label("vit_tiny_patch16_224", {}, 224, 224) == "vit_tiny_patch16_224"
    t = build_teacher("vit_tiny_patch16_224", img_size=32, feature_dim=64, patch_size=8, embed_dim=64, depth=1,
                      num_heads=2, num_classes=64)
    assert t.label == ("vit_tiny_patch16_224 (img_size=32, patch_size=8, embed_dim=64, depth=1, num_heads=2, "
                       "num_classes=64)")
