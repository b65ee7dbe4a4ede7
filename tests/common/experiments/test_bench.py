"""`rkdsc bench` at toy scale: every section is present, measurements are positive and the
networked runs answer every image."""
from __future__ import annotations

import json

import pytest

from rkdsc.common.experiments.bench_format import bench_markdown
from rkdsc.common.experiments import bench


@pytest.fixture(scope="module")
def doc(tmp_path_factory, bundle_dir, sample_dir):
    work = tmp_path_factory.mktemp("bench")
    out = work / "bench.json"
    d = bench.run_bench(str(bundle_dir), images=8, out=str(out), data=str(sample_dir), batch_size=4, edges=(1, 3),
                        encoder_batches=(1, 32), threads=1, work_dir=str(work / "wd"), log=lambda s: None, rounds=2)
    assert json.loads(out.read_text())["ratios"] == d["ratios"]
    return d


def test_rounds_are_side_by_side_and_merged_by_median(doc):
    import statistics

    assert doc["rounds"] == 2
    ip_rounds = doc["inprocess"]["rounds"]
    assert len(ip_rounds) == 2
    assert doc["inprocess"]["images_per_s"] == pytest.approx(statistics.median(r["images_per_s"] for r in ip_rounds))
    for e in ("1", "3"):
        net = doc["networked"][e]
        assert len(net["rounds"]) == 2 and net["answered"] == 2 * 8 * int(e)  # both rounds answered every image
        per_round = [n["images_per_s"] / i["images_per_s"] for n, i in zip(net["rounds"], ip_rounds)]
        assert doc["ratios"][f"networked_{e}_over_inprocess_throughput_rounds"] == pytest.approx(per_round)
        assert doc["ratios"][f"networked_{e}_over_inprocess_throughput"] == pytest.approx(statistics.median(per_round))


def test_throughput_and_latency(doc):
    ip = doc["inprocess"]
    assert ip["images"] == 8 and ip["images_per_s"] > 0 and ip["compute_images_per_s"] >= ip["images_per_s"]
    assert 0 < ip["latency_ms"]["p50"] <= ip["latency_ms"]["p99"]
    for e in ("1", "3"):
        net = doc["networked"][e]
        assert net["ok"] and net["errors"] == 0
        assert net["answered"] == net["images"] == 2 * 8 * int(e)  # summed over the 2 rounds
        assert net["images_per_s"] > 0 and 0 < net["latency_ms"]["p50"] <= net["latency_ms"]["p99"]
        assert net["startup_and_teardown_s"] >= 0
    assert doc["ratios"]["networked_3_over_1_throughput"] > 0


def test_encoder_torch_vs_ort(doc):
    enc = doc["encoder"]
    assert enc["torch"], enc["torch_source"]
    same_weights = "random weights" not in enc["torch_source"]  # random bundle: seeded, identical weights
    for b in ("1", "32"):
        res = enc["batches"][b]
        assert res["ort_ms_per_image"] > 0 and res["torch_ms_per_image"] > 0
        if same_weights:
            assert res["max_abs_diff"] < 1e-3  # the torch twin is the same network as the ONNX file
        assert res["ort_speedup"] == pytest.approx(res["torch_ms_per_image"] / res["ort_ms_per_image"])


def test_channel_cost_and_wire_bytes(doc):
    k = doc["symbols_per_image"]
    assert doc["channel"]["symbols_per_frame"] == k
    for f in ("awgn", "rayleigh"):
        c = doc["channel"][f]
        assert c["batched_ns_per_symbol"] > 0 and c["per_frame_ns_per_symbol"] > 0
        assert c["per_frame_us_per_frame"] == pytest.approx(c["per_frame_ns_per_symbol"] * k / 1e3)
    w = doc["wire"]
    assert w["symbol_payload_bytes"] == 8 * k  # complex64 symbols
    assert w["uplink_bytes_per_image"] > w["symbol_payload_bytes"]  # + frame header
    h, w_ = doc["input_size"]
    assert w["raw_image_bytes"] == 3 * h * w_
    assert w["raw_over_wire"] == pytest.approx(w["raw_image_bytes"] / w["uplink_bytes_per_image"])
    md = bench_markdown(doc)
    assert "| in-process |" in md
    for e, res in doc["networked"].items():  # median per-round ratio to in-process, with its range
        ratio = doc["ratios"][f"networked_{e}_over_inprocess_throughput"]
        lo, hi = min(doc["ratios"][f"networked_{e}_over_inprocess_throughput_rounds"]), \
            max(doc["ratios"][f"networked_{e}_over_inprocess_throughput_rounds"])
        assert f"| networked, {e} edge(s) | {res['images_per_s']:.1f} | {ratio:.2f} ({lo:.2f}-{hi:.2f}) |" in md
