"""`rkdsc bench` at toy scale: every section is present, measurements are positive and the
networked runs answer every image."""
from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

import pytest

from rkdsc.common.experiments.bench_format import bench_markdown
from rkdsc.common.experiments import bench


@pytest.fixture(scope="module")
def doc(tmp_path_factory, bundle_dir, sample_dir):
    work = tmp_path_factory.mktemp("bench")
    out = work / "bench.json"
    # edges 1, 3 and 4 (the many-edge row at toy scale: 2 processes of 2 devices, and 4 processes for
    # comparison), the batch-1 latency runs on 4 images
    d = bench.run_bench(str(bundle_dir), images=8, out=str(out), data=str(sample_dir), batch_size=4, edges=(1, 3, 4),
                        encoder_batches=(1, 32), threads=1, work_dir=str(work / "wd"), log=lambda s: None, rounds=2,
                        latency_images=4, tls=False, many_per_process=2)
    assert json.loads(out.read_text())["ratios"] == d["ratios"]
    assert (work / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the goals' plot beside the JSON
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
    assert enc["same_weights"]  # only same-weight pairs are compared
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


def test_a_random_weight_twin_is_compared_with_its_own_export(bundle_dir, tmp_path):
    """No training work dir: the twin has random weights, so onnxruntime runs the twin's own ONNX
    export (not the bundle's file) and the difference is that of one network."""
    import shutil

    from rkdsc.common.bundle import load_bundle
    from rkdsc.common.bundle.manifest import read_manifest, write_manifest

    b = tmp_path / "bundle"
    shutil.copytree(bundle_dir, b)
    man = read_manifest(b)
    man["provenance"].update(method="rkd-sc", workdir=str(tmp_path / "gone"))
    write_manifest(b, man)
    bdl = load_bundle(b)
    enc = bench.bench_encoder(bdl, bdl.task().name, (1,), 1, repeats=3, work=tmp_path)
    assert enc["torch"] and enc["same_weights"], enc
    assert "random weights" in enc["torch_source"] and "not found" in enc["torch_source"]
    assert "ONNX export of the torch twin" in enc["ort_source"]
    assert enc["batches"]["1"]["max_abs_diff"] < 1e-3


def test_markdown_shows_no_difference_for_different_weights(doc):
    """An older document whose torch twin had random weights: its max abs diff is not shown."""
    old = dict(doc, encoder={"threads": 1, "torch_source": "architecture of preset 'default' with random weights (x)",
                             "batches": {"1": {"torch_ms_per_image": 2.0, "ort_ms_per_image": 1.0, "ort_speedup": 2.0,
                                               "max_abs_diff": 2.2}}})
    md = bench_markdown(old)
    assert "| 1 | 2.000 | 1.000 | 2.00 | n/a (different weights) |" in md and "2.2e+00" not in md


GOAL_KEYS = {"id", "figure", "unit", "measure", "reference", "reference_label", "measured", "value", "rounds", "goal",
             "threshold", "pass", "detail"}


def test_goal_rows_cover_the_issue_table(doc):
    """Every figure of the data-plane table is a goal row with its reference, measurement, ratio (median of
    the per-round values), goal and verdict, in the JSON and in the printed table."""
    import statistics

    rows = {r["id"]: r for r in doc["goals"]}
    assert list(rows) == ["throughput_1_edge", "throughput_3_edges", "latency_p99_batch1",
                          "relay_channel_ns_per_symbol", "scale_many_edges"]
    for r in rows.values():
        assert set(r) == GOAL_KEYS and r["value"] is not None and isinstance(r["pass"], bool), r
        assert r["reference"] > 0 and r["measured"] > 0
    # throughput: the per-round ratios of the networked runs to in-process
    for key, e in (("throughput_1_edge", "1"), ("throughput_3_edges", "3")):
        assert rows[key]["rounds"] == doc["ratios"][f"networked_{e}_over_inprocess_throughput_rounds"]
        assert rows[key]["pass"] == (rows[key]["value"] >= rows[key]["threshold"])
    # batch-1 latency with one frame in flight: p99 difference per round, side by side
    lat = doc["latency"]
    assert lat["images"] == 4 and lat["batch_size"] == 1 and lat["max_in_flight"] == 1
    assert lat["inprocess"]["batch_size"] == 1 and len(lat["inprocess"]["rounds"]) == 2
    net = lat["networked"]
    assert net["ok"] and net["errors"] == 0 and net["answered"] == 2 * 4 and net["max_in_flight"] == 1
    assert 0 < net["rtt_ms"]["p50"] <= net["rtt_ms"]["p99"]
    # the networked image's latency is encode + hand-over to result (encode_ms + rtt_ms), as in-process
    assert 0 < net["service_latency_ms"]["p50"] <= net["service_latency_ms"]["p99"]
    per_round = [n["service_p99_ms"] - i["p99_ms"] for n, i in zip(net["rounds"], lat["inprocess"]["rounds"])]
    row = rows["latency_p99_batch1"]
    assert row["rounds"] == pytest.approx(per_round) and row["value"] == pytest.approx(statistics.median(per_round))
    assert row["measure"] == "delta" and row["pass"] == (row["value"] <= 2.0)
    # the relay's channel: its call pattern from its own metrics (one call per message: a batch of 4)
    sv = doc["networked"]["1"]["services"]
    assert sv["relay_frames_per_channel_call"] == doc["batch_size"] and sv["relay_channel_ns_per_symbol"] > 0
    # ... and the same edge with one frame per message (the single-frame Transmit), side by side
    single = doc["networked_single_frame_messages"]["1"]
    assert single["ok"] and single["answered"] == 2 * 8 and not single["batch_messages"]
    assert single["services"]["relay_frames_per_channel_call"] == 1.0
    assert len(doc["ratios"]["batched_over_single_frame_messages_1_edge_rounds"]) == 2
    # ... and the batched edge with read-ahead the other way from the default, side by side: same
    # answers, the with-over-without ratio per round
    default = doc["networked"]["1"]["read_ahead"]
    other = doc["networked_no_read_ahead" if default else "networked_read_ahead"]["1"]
    assert "networked_read_ahead" not in doc if default else "networked_no_read_ahead" not in doc
    assert other["ok"] and other["answered"] == 2 * 8 and other["read_ahead"] is not default
    assert other["accuracy"] == doc["networked"]["1"]["accuracy"]
    with_, without = (doc["networked"]["1"], other) if default else (other, doc["networked"]["1"])
    per_round = [a["images_per_s"] / b["images_per_s"] for a, b in zip(with_["rounds"], without["rounds"])]
    assert doc["ratios"]["read_ahead_over_no_read_ahead_1_edge_rounds"] == pytest.approx(per_round)
    key = ("no_" if default else "") + "read_ahead_1_over_inprocess_throughput_rounds"
    per_round = [o["images_per_s"] / i["images_per_s"] for o, i in zip(other["rounds"], doc["inprocess"]["rounds"])]
    assert doc["ratios"][key] == pytest.approx(per_round)
    assert sv["server_mean_batch"] >= 1
    rp = doc["channel"]["relay_pattern"]
    assert rp["frames_per_call"] >= 1 and rp["fading"] == doc["fading"] and "metrics" in rp["frames_per_call_source"]
    row = rows["relay_channel_ns_per_symbol"]
    assert row["measured"] == rp["ns_per_symbol"] and row["reference"] == rp["batched_ns_per_symbol"]
    assert row["pass"] == (row["value"] <= 50.0)
    # the many-edge run against the 3-edge run, per round
    assert doc["scale_edges"] == 4
    row = rows["scale_many_edges"]
    many = doc["networked"]["4"]
    assert many["ok"] and many["errors"] == 0 and many["answered"] == 2 * 8 * 4
    per_round = [b["images_per_s"] / a["images_per_s"] for a, b in zip(doc["networked"]["3"]["rounds"], many["rounds"])]
    assert row["rounds"] == pytest.approx(per_round) and row["reference"] == doc["networked"]["3"]["images_per_s"]
    # ... with where its CPU went against the 3-edge run, by role
    cpu3, cpu4 = doc["networked"]["3"]["cpu_us_per_image"], many["cpu_us_per_image"]
    assert f"edge processes {cpu3['edges']:.0f} -> {cpu4['edges']:.0f} us" in row["detail"]
    # ... its devices in 2 processes of 2, and the same 4 devices as a process each, side by side
    assert (doc["scale_edges_per_process"], many["edge_processes"], many["edges_per_process"]) == (2, 2, 2)
    assert row["figure"] == "4 edges (2 processes of 2 devices) through one relay and server"
    alone = doc["networked_process_per_device"]["4"]
    assert alone["ok"] and alone["errors"] == 0 and alone["answered"] == 2 * 8 * 4 and alone["edge_processes"] == 4
    assert alone["accuracy"] == many["accuracy"]  # the same seeds: the same answers either way
    per_round = [a["images_per_s"] / b["images_per_s"] for a, b in zip(alone["rounds"], doc["networked"]["3"]["rounds"])]
    assert doc["ratios"]["networked_4_process_per_device_over_3_throughput_rounds"] == pytest.approx(per_round)
    per_round = [a["images_per_s"] / b["images_per_s"] for a, b in zip(alone["rounds"], many["rounds"])]
    assert doc["ratios"]["networked_4_process_per_device_over_fleets_throughput_rounds"] == pytest.approx(per_round)
    assert f"as 4 processes: {alone['images_per_s']:,.0f} images/s" in row["detail"]
    md = bench_markdown(doc)
    for r in rows.values():
        verdict = "PASS" if r["pass"] else "FAIL"
        assert f"| {r['figure']} |" in md and f"| {r['goal']} | {verdict} |" in md
    assert "| networked, 1 edge, batch 1, 1 frame in flight (4 images) |" in md
    assert ("| networked, 1 edge(s), without read-ahead (`read_ahead = false`) |" if default else
            "| networked, 1 edge(s), with read-ahead (`read_ahead = true`) |") in md


def test_older_documents_without_goals_still_render(doc):
    old = {k: v for k, v in doc.items() if k not in ("goals", "latency")}
    md = bench_markdown(old)
    assert "against its goals" not in md and "| in-process |" in md


def test_soak_reports_services_at_start_and_end(bundle_dir, sample_dir, tmp_path):
    """Soak at toy scale: 2 edge processes for 3 s, started again as they finish; every image answered,
    the server's and relay's RSS and threads sampled at ready, start and end."""
    from rkdsc.common.experiments.bench_format import soak_markdown

    out = tmp_path / "soak.json"
    d = bench.run_soak(str(bundle_dir), edges=2, soak_s=3.0, out=str(out), data=str(sample_dir), batch_size=4,
                       images_per_run=8, sample_every_s=1.0, work_dir=str(tmp_path / "wd"), log=lambda s: None)
    assert json.loads(out.read_text()) == d
    s = d["soak"]
    assert s["ok"], (s["failure"], s["failures"])
    assert s["errors"] == 0 and s["failed_runs"] == 0 and s["edge_runs"] >= 2
    assert s["answered"] == s["images"] > 0 and s["images_per_s"] > 0
    assert s["service_exit_status"] == {"relay": 0, "server": 0}
    labels = [x["label"] for x in s["samples"]]
    assert labels[0] == "ready" and labels[-1] == "end" and "start" in labels
    for name in ("server", "relay"):
        for when in ("start", "end"):
            st = s[name][when]
            assert st["rss_mb"] > 0 and st["threads"] >= 1 and st["fds"] >= 1, (name, when, st)
    md = soak_markdown(d)
    assert "**0 errors**" in md and "Verdict: PASS" in md and "| end |" in md


def test_cpu_per_image_by_role_is_measured_while_streaming(doc):
    """Each networked run splits its CPU per answered image into the edge processes (their own CPU time
    over their run), the relay and the server (/proc, from the start gate to the last edge's exit): the
    parts add up, stay within what the cores had, and the document's figure is the median of the rounds."""
    for e in ("1", "3", "4"):
        net = doc["networked"][e]
        for rnd in net["rounds"]:
            c = rnd["cpu_us_per_image"]
            # the services' figures come in 10 ms ticks (/proc): at this toy scale they may read 0
            assert c["edges"] > 0 and c["relay"] >= 0 and c["server"] >= 0, (e, c)
            assert c["total"] == pytest.approx(c["edges"] + c["relay"] + c["server"])
            # no more CPU than the machine's cores had over the streaming window (+ 50 ms per process: ticks, gate and exit)
            assert c["total"] * 1e-6 * rnd["answered"] <= (os.cpu_count() or 1) * rnd["edge_window_s"] + 0.05 * (int(e) + 2)
        assert net["cpu_us_per_image"]["edges"] == pytest.approx(
            statistics.median(r["cpu_us_per_image"]["edges"] for r in net["rounds"]))
    md = bench_markdown(doc)
    c = doc["networked"]["3"]["cpu_us_per_image"]
    assert f"| 3 edge(s) | {c['edges']:.0f} | {c['relay']:.0f} | {c['server']:.0f} | {c['total']:.0f} |" in md


def test_cpu_per_image_needs_every_figure():
    rows = [{"process_cpu_s": 0.5}, {"process_cpu_s": 1.5}]
    got = bench.cpu_per_image(rows, {"relay": 0.25, "server": 0.75}, 1000)
    assert got == pytest.approx({"edges": 2000.0, "relay": 250.0, "server": 750.0, "total": 3000.0})
    part = bench.cpu_per_image([{"process_cpu_s": 0.5}, {}], {"relay": 0.25, "server": None}, 1000)
    assert part["edges"] is None and part["server"] is None and part["relay"] == pytest.approx(250.0)
    assert part["total"] is None
    assert bench.cpu_per_image([], {}, 0) == {"edges": None, "relay": None, "server": None, "total": None}
    # the devices of one edge process (a fleet) each report that process's CPU: it counts once, the largest
    fleet = [{"process": "f0", "process_cpu_s": 1.0}, {"process": "f0", "process_cpu_s": 1.5},
             {"process": "f1", "process_cpu_s": 0.5}]
    assert bench.cpu_per_image(fleet, {"relay": 0.0, "server": 0.0}, 1000)["edges"] == pytest.approx(2000.0)


def test_process_cpu_seconds_of_this_process_grow_with_work_and_a_gone_one_is_none():
    import os
    import time

    from rkdsc.common.experiments.demo import process_cpu_s

    before = process_cpu_s(os.getpid())
    t0 = time.process_time()
    while time.process_time() - t0 < 0.3:  # burn 0.3 s of CPU
        sum(range(1000))
    after = process_cpu_s(os.getpid())
    assert before is not None and after - before == pytest.approx(0.3, abs=0.05)  # 10 ms ticks
    assert process_cpu_s(2 ** 22 + 12345) is None


def test_proc_status_of_this_process_and_a_gone_one():
    import os

    st = bench.proc_status(os.getpid())
    assert st["rss_mb"] > 0 and st["threads"] >= 1 and st["fds"] >= 1
    assert bench.proc_status(2 ** 22 + 12345) is None  # above the default pid_max: no such process


def test_digit_images_beyond_the_held_back_set_are_identical_copies(bundle, tmp_path):
    """--images above the 359 held-back digits: the folder holds exactly that many files, the extra
    ones byte-identical copies in the same class folders; at or below 359 nothing is copied."""
    few = bench.prepare_images(None, bundle, "digits", 100, tmp_path / "few")
    originals = sorted(few.glob("*/*.png"))
    assert len(originals) == 359 and not list(few.glob("*/*-r*.png"))
    many = bench.prepare_images(None, bundle, "digits", 800, tmp_path / "many")
    files = sorted(many.glob("*/*.png"))
    copies = [f for f in files if "-r" in f.stem]
    assert len(files) == 800 and len(copies) == 800 - 359
    for c in copies:
        src = c.with_name(c.stem.split("-r")[0] + c.suffix)
        assert src.parent == c.parent and src.read_bytes() == c.read_bytes()


def test_a_kept_work_dir_gets_its_images_written_afresh(bundle, tmp_path):
    """A second bench into the same --work-dir: no FileExistsError, and the folder holds the
    second run's images only (800 then 400: no copies of the first run left behind)."""
    first = bench.prepare_images(None, bundle, "digits", 800, tmp_path)
    assert len(list(first.glob("*/*.png"))) == 800
    again = bench.prepare_images(None, bundle, "digits", 400, tmp_path)
    assert again == first and len(list(again.glob("*/*.png"))) == 400


def test_the_goals_plot_draws_each_rows_verdict(tmp_path):
    """plot_goals on a recorded run: one panel per goal with the JSON's verdict; a row not run and a
    flipped verdict are drawn as such; a document without goals is refused naming the field."""
    import copy

    from PIL import Image

    from rkdsc.common.experiments.bench_format import plot_goals

    recorded = json.loads((Path(__file__).resolve().parents[3] / "docs/runs/bench/bench-2026-12-07f.json").read_text())
    expected = ["PASS" if g["pass"] else "FAIL" for g in recorded["goals"]]
    assert "FAIL" in expected and "PASS" in expected
    assert plot_goals(recorded, tmp_path / "a.png") == expected
    with Image.open(tmp_path / "a.png") as im:
        assert im.format == "PNG" and im.width > 2 * im.height  # one panel per goal, side by side
    changed = copy.deepcopy(recorded)
    changed["goals"][0].update(value=None, rounds=[], measured=None, **{"pass": None})
    changed["goals"][-1]["pass"] = not changed["goals"][-1]["pass"]
    flipped = "PASS" if expected[-1] == "FAIL" else "FAIL"
    assert plot_goals(changed, tmp_path / "b.png") == ["not run", *expected[1:-1], flipped]
    with pytest.raises(ValueError, match="goals"):
        plot_goals({"goals": []}, tmp_path / "c.png")
    assert bench.goals_plot_path(tmp_path / "r.json") == tmp_path / "r.png"
    assert bench.goals_plot_path(tmp_path / "r.png") == tmp_path / "r.png.png"  # never over the JSON
