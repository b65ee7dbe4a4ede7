"""`rkdsc profile` (Table II) at toy scale: content of the JSON and the Markdown table."""
from __future__ import annotations

import json

import pytest

from rkdsc.common.experiments import profile as prof
from rkdsc.common.models import CATConfig, StudentConfig, TeacherConfig

TINY = dict(student=StudentConfig(input_size=32, stem_widths=(8, 8, 16), planes=(4, 8, 16, 16), max_depth=4,
                                   feature_dim=64, heads=4),
            depths=[1, 1, 2, 1], cat=CATConfig(feature_dim=64, n_heads=4, d_ff=64, compression_ratio=0.8),
            teacher=TeacherConfig(name="vit_tiny_patch16_224", img_size=32, feature_dim=64,
                                  timm_kwargs={"patch_size": 8, "embed_dim": 64, "depth": 1, "num_heads": 2,
                                               "num_classes": 64}))
FAST = prof.ProfileOptions(batches=(1, 4), warmup=1, repeats=3, budget_s=0.05)


@pytest.fixture(scope="module")
def doc():
    spec = prof.ArchSpec(label="tiny", **TINY)
    # the teacher is profiled (without onnxruntime, to save an ONNX export) in test_cli_preset_json
    return prof.profile([spec], ["rkd-sc", "jscc-student"], FAST, log=lambda s: None)


def test_rows_have_positive_measurements(doc):
    rows = {r["method"]: r for r in doc["rows"]}
    assert set(rows) == {"rkd-sc", "jscc-student"}
    for r in rows.values():
        assert r["params"]["encoder"] > 0 and r["gflops"] > 0
        for key in ("torch_cpu_b1", "torch_cpu_b4", "ort_cpu_b1", "ort_cpu_b4"):
            lat = r["latency_ms"][key]
            assert lat["per_image_ms"] > 0 and lat["runs"] >= 3
            assert lat["batch_ms"] == pytest.approx(lat["per_image_ms"] * int(key.rsplit("b", 1)[1]))
        assert r["cpu_ms"] == r["latency_ms"]["torch_cpu_b1"]["per_image_ms"]
        # the paper's footnote: t_IoT = t_CPU * 871.49 / 32
        assert r["iot_ms"] == pytest.approx(r["cpu_ms"] * 871.49 / 32, rel=1e-12)
        assert r["iot_scaled_ms"] == pytest.approx(r["cpu_ms"] * doc["machine"]["matmul_gflops"] / 32, rel=1e-12)
    assert doc["machine"]["matmul_gflops"] > 0


def test_single_image_time_is_the_interleaved_one(doc):
    for r in doc["rows"]:
        lat = r["latency_ms"]
        assert lat["torch_cpu_b1"]["rounds"] == FAST.interleave_rounds
        assert lat["torch_cpu_b1"]["runs"] >= FAST.interleave_rounds
        assert lat["torch_cpu_b1_sequential"]["per_image_ms"] > 0 and "rounds" not in lat["torch_cpu_b1_sequential"]
    assert doc["settings"]["interleave_rounds"] == FAST.interleave_rounds
    assert "in alternation over 10 rounds" in prof.markdown_table(doc)


class _Sleeper:
    """A stand-in encoder whose forward pass takes a known time."""

    def __init__(self, seconds: float):
        self.seconds, self.calls = seconds, 0

    def to(self, _device):
        return self

    def eval(self):
        return self

    def __call__(self, img, snr):
        import time

        self.calls += 1
        time.sleep(self.seconds)
        return img


def test_interleaved_timer_alternates_and_ranks():
    slow, fast = _Sleeper(0.004), _Sleeper(0.001)
    out = prof.time_torch_interleaved({"slow": slow, "fast": fast}, input_size=8, batch=2, warmup=1, repeats=8,
                                      budget_s=10.0, rounds=4)
    assert out["slow"]["runs"] == out["fast"]["runs"] == 8  # 4 rounds x 2 runs, plus 1 untimed warm-up each
    assert slow.calls == fast.calls == 9
    # sleep() never returns early: the slow module's median is at least its sleep, and above the fast one's
    assert out["slow"]["batch_ms"] >= 4.0 and out["fast"]["batch_ms"] >= 1.0
    assert out["slow"]["per_image_ms"] == pytest.approx(out["slow"]["batch_ms"] / 2)
    assert out["slow"]["batch_ms"] > out["fast"]["batch_ms"]


def test_cat_adds_parameters_and_compresses(doc):
    rows = {r["method"]: r for r in doc["rows"]}
    rkd, stu = rows["rkd-sc"], rows["jscc-student"]
    assert rkd["params"]["encoder"] > stu["params"]["encoder"]
    assert rkd["params"]["encoder"] == stu["params"]["encoder"] + rkd["params"]["cat_encoder"]
    assert rkd["params"]["student"] == stu["params"]["encoder"]  # same searched student
    assert rkd["gflops"] > stu["gflops"]
    assert rkd["feature_dim"] == 12  # floor(64 * (1 - 0.8))
    assert rkd["symbols_per_image"] == 6
    assert stu["feature_dim"] == 64


def test_markdown_lists_every_row(doc):
    md = prof.markdown_table(doc)
    lines = [l for l in md.splitlines() if l.startswith("| ")]
    assert len(lines) == 1 + len(doc["rows"])
    rkd = next(r for r in doc["rows"] if r["method"] == "rkd-sc")
    assert f"| {rkd['params_m']:.3f} |" in md and f"{rkd['iot_ms']:.2f}" in md
    assert "871.49" in md


def test_cli_preset_json(tmp_path, capsys):
    out = tmp_path / "p.json"
    rc = prof.cli(["--preset", "smoke", "--no-ort", "--batches", "1,2", "--teacher-batches", "1,4", "--repeats", "3",
                   "--budget-s", "0.05", "--warmup", "1", "--depths", "2", "1", "1", "1", "--out", str(out), "--quiet"])
    assert rc == 0
    doc = json.loads(out.read_text())
    rows = {r["method"]: r for r in doc["rows"]}
    assert list(rows) == ["rkd-sc", "jscc-student", "jscc-teacher"]
    assert all(rows[m]["depths"] == [2, 1, 1, 1] and rows[m]["input_size"] == 32 for m in ("rkd-sc", "jscc-student"))
    tea = rows["jscc-teacher"]  # the smoke preset's tiny timm ViT
    assert tea["teacher"] == "vit_tiny_patch16_224" and tea["params"]["encoder"] > 0 and tea["gflops"] > 0
    assert tea["feature_dim"] == 64 and tea["params"]["cat_encoder"] == 0
    assert tea["iot_ms"] == pytest.approx(tea["cpu_ms"] * 871.49 / 32, rel=1e-12)
    assert "ort_cpu_b1" not in tea["latency_ms"] and rows["rkd-sc"]["dataset"] == "digits"
    assert doc["iot"]["paper_cpu_gflops"] == 871.49 and doc["iot"]["pi_gflops"] == 32
    out_text = capsys.readouterr().out
    assert "| rkd-sc | smoke |" in out_text
    # the teacher's own large batch (4) fills the b2 column, marked as such; every method was timed interleaved
    assert "(b4)" in out_text.split("| jscc-teacher | smoke |", 1)[1].splitlines()[0]
    assert all("torch_cpu_b1_sequential" in r["latency_ms"] for r in doc["rows"])


def test_cli_rejects_unknown_method(capsys):
    assert prof.cli(["--methods", "rkd-sc,foo"]) == 2
    assert "foo" in capsys.readouterr().err
