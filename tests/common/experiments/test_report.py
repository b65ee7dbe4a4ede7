"""`rkdsc report` on a tiny constructed runs dir: tables carry the right numbers and every claim
gets the verdict its rule gives on the constructed inputs."""
from __future__ import annotations

import json
import re

import pytest

from rkdsc.common.experiments import report
from tests.common.experiments.test_analysis import arch_doc

SNRS = [-10.0, 0.0, 25.0]


def _curve(accs: list[float]) -> list[dict]:
    return [{"snr_db": s, "accuracy": a, "n": 100} for s, a in zip(SNRS, accs)]


def _method(edge_params: int, compact: int, awgn: list[float], rayleigh: list[float]) -> dict:
    return {"bundle": "x", "encoder_params": edge_params, "edge_params": edge_params, "server_params": 1234,
            "symbols_per_image": (compact + 1) // 2, "compact_dim": compact,
            "accuracy": {}, "curves": {"awgn": _curve(awgn), "rayleigh": _curve(rayleigh)}}


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """(summary, markdown path) of one report over the constructed runs."""
    tmp_path = tmp_path_factory.mktemp("report")
    out = tmp_path / "docs" / "reproduction.md"
    return report.generate([str(r) for r in make_runs(tmp_path)], out), out


def make_runs(tmp_path):
    c10 = tmp_path / "runs" / "cifar10-cpu"
    _write(c10 / "results.json", {
        "preset": "cifar10-cpu", "seed": 0, "device": "cpu", "torch_threads": 2, "wall_s": 100.0,
        "teacher": {"name": "vit_tiny", "source": "self-trained", "val_acc": 0.93, "params": 5_000_000},
        "eval": {"split": "preset:cifar10-cpu:val", "n": 100}, "steps_s": {"teacher": 10.0},
        "methods": {
            "rkd-sc": _method(1_000_000, 102, [0.30, 0.70, 0.90], [0.25, 0.60, 0.85]),
            "jscc-student": _method(400_000, 512, [0.10, 0.60, 0.88], [0.10, 0.50, 0.80]),
            "jscc-teacher": _method(5_000_000, 512, [0.20, 0.80, 0.92], [0.15, 0.70, 0.90]),
        }})
    for a in (arch_doc("kdl-darts", [3, 4, 4, 1], [0.30, 0.61], [[5, 5, 5, 5], [3, 4, 4, 1]]),
              arch_doc("darts", [5, 2, 5, 2], [0.28, 0.55], [[5, 5, 5, 5], [5, 2, 5, 2]])):
        _write(c10 / f"search-{a['method']}" / "arch.json", a)
    _write(c10 / "ablation" / "ablation.json", {
        "preset": "cifar10-cpu", "dataset": "cifar10", "snr_db": -10.0, "channels": ["awgn"], "epochs": 1,
        "noise_draws": 1, "eval_split": "val", "n": 100,
        "points": [{"compression_ratio": r, "compact_dim": c, "symbols_per_image": (c + 1) // 2,
                    "accuracy": {"awgn": a}, "accuracy_at_snr": a}
                   for r, c, a in ((0.1, 460, 0.30), (0.5, 256, 0.25), (0.9, 51, 0.20))],
        "paper": {"endpoints_pct": [11.73, 63.8]}})
    _write(c10 / "profile.json", {
        "machine": {"processor": "cpu", "threads": 2, "matmul_gflops": 100.0, "gpu": None},
        "settings": {"batches": [1, 64]},
        "rows": [
            {"method": m, "source": "cifar10-cpu", "dataset": "cifar10", "input_size": 32, "params_m": p,
             "params_without_cat_m": p, "gflops": 0.1, "gpu_us": None, "feature_dim": 102,
             "latency_ms": {"torch_cpu_b1": {"per_image_ms": t}}, "cpu_ms": t,
             "iot_ms": t * 871.49 / 32, "iot_scaled_ms": t * 100 / 32}
            for m, p, t in (("rkd-sc", 1.0, 2.0), ("jscc-student", 0.4, 1.0), ("jscc-teacher", 5.0, 30.0))]})
    tin = tmp_path / "runs" / "tinyimagenet-cpu"  # only results: RKD-SC loses to the teacher at -10 dB
    _write(tin / "results.json", {
        "preset": "tinyimagenet-cpu", "teacher": {"name": "t", "params": 1},
        "methods": {"rkd-sc": _method(1_000, 460, [0.01, 0.10, 0.20], [0.01, 0.1, 0.2]),
                    "jscc-teacher": _method(2_000, 512, [0.02, 0.20, 0.40], [0.02, 0.2, 0.4])}})
    return [c10, tin, tmp_path / "runs" / "missing"]


def _claims(summary, source):
    return {c["id"]: c for c in summary["claims"] if c["source"] == source}


def test_verdicts_on_constructed_runs(generated):
    summary, out = generated
    c = _claims(summary, "cifar10-cpu")
    assert c["teacher_retention_25db"]["measured"] == pytest.approx(100 * 0.90 / 0.92)
    assert c["teacher_retention_25db"]["verdict"] == "holds"  # 97.8 >= 95.86
    assert c["gain_over_student_25db"]["measured"] == pytest.approx(100 * 0.02 / 0.88)
    assert c["gain_over_student_25db"]["verdict"] == "holds qualitatively"  # 2.3% < 3.41%, still > 0
    assert c["gain_over_teacher_m10db"]["measured"] == pytest.approx(50.0)
    assert c["gain_over_teacher_m10db"]["verdict"] == "holds qualitatively"  # 50% < 83.12%
    assert c["param_reduction_vs_teacher"]["measured"] == pytest.approx(80.0)
    assert c["param_reduction_vs_teacher"]["verdict"] == "holds qualitatively"
    assert c["kdl_vs_darts_accuracy"]["measured"] == pytest.approx(6.0)
    assert c["kdl_vs_darts_accuracy"]["verdict"] == "holds"  # 6 pp >= 5 pp
    assert c["kdl_vs_darts_params"]["measured"] == pytest.approx(100 * (1101248 - 777280) / 1101248)
    assert c["kdl_vs_darts_params"]["verdict"] == "holds"  # 29.42% >= 29.4%
    assert c["feature_dim"]["verdict"] == "holds"  # 102 values
    assert c["fig8_trend"]["measured"] == pytest.approx(-10.0)
    assert c["fig8_trend"]["verdict"] == "does not hold"  # falls, the paper's rises on CIFAR10
    assert c["cat_latency_overhead"]["measured"] == pytest.approx(100.0)
    assert c["cat_latency_overhead"]["verdict"] == "does not hold"
    assert c["teacher_slowdown"]["measured"] == pytest.approx(15.0)
    assert c["teacher_slowdown"]["verdict"] == "holds"  # 15x >= 9.97x

    t = _claims(summary, "tinyimagenet-cpu")
    assert t["gain_over_teacher_m10db"]["measured"] == pytest.approx(-50.0)
    assert t["gain_over_teacher_m10db"]["verdict"] == "does not hold"
    assert t["teacher_retention_25db"]["verdict"] == "does not hold"  # 50% < 78.39%
    assert t["gain_over_student_25db"]["verdict"] == "not run"  # no JSCC-student
    assert t["kdl_vs_darts_params"]["verdict"] == "not run"
    assert t["fig8_trend"]["verdict"] == "not run"
    assert {x["verdict"] for x in _claims(summary, "missing").values()} == {"not run"}
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["verdict_counts"]["holds"] == sum(x["verdict"] == "holds" for x in summary["claims"])


def test_markdown_tables_and_figures(generated):
    _, out = generated
    md = out.read_text()
    # Fig. 6 table: percentages of the constructed curves
    assert "| RKD-SC | awgn | 30.00 | 70.00 | 90.00 |" in md
    assert "| JSCC-student | rayleigh | 10.00 | 50.00 | 80.00 |" in md
    assert "| JSCC-student | awgn | not run | not run | not run |" in md  # tinyimagenet run has none
    # Table III from the arch.json pair, Table II from the profile, Fig. 8 from the ablation
    assert "| cifar10-cpu | KDL-DARTS | [3, 4, 4, 1] | 0.0136 | 0.0776 | 0.3067 | 0.3794 | 0.7773 | 61.00 |" in md
    assert "| 0.9 | 51 | 26 | 20.00 |" in md
    assert re.search(r"\| rkd-sc \| cifar10-cpu \| 32 \| 1\.000 \|", md)
    # the paper's numbers sit next to ours
    assert "95.86%" in md and "83.12%" in md and "29.40%" in md
    assert "| CIFAR10 | KDL-DARTS | 0.014 | 0.078 | 0.307 | 0.379 | 0.777 | [3, 4, 4, 1] | 0.777 |" in md
    assert "not run" in md and "missing" in md
    assert "Full-scale recipe" in md and "RTX 4090" in md
    figs = out.parent / "figures"
    for name in ("fig6-cifar10-cpu.png", "fig7-cifar10-cpu.png", "fig8-cifar10-cpu.png", "fig6-tinyimagenet-cpu.png"):
        assert (figs / name).stat().st_size > 5_000, name
        assert f"(figures/{name})" in md


def test_judge_rules():
    assert report.judge(None, 5.0) == "not run"
    assert report.judge(5.0, 5.0) == "holds"
    assert report.judge(4.0, 5.0, qualitative=True) == "holds qualitatively"
    assert report.judge(-1.0, 5.0, qualitative=False) == "does not hold"
    assert report.judge(4.0, 5.0) == "does not hold"
    assert report.judge(3.0, 5.0, higher_is_better=False) == "holds"
    assert report.judge(1.0, None, qualitative=True) == "holds qualitatively"


def test_cli_empty_runs_never_crash(tmp_path, capsys):
    out = tmp_path / "r.md"
    assert report.cli(["--runs", str(tmp_path / "nope"), "--out", str(out)]) == 0
    md = out.read_text()
    assert "not run" in md and "## Claims" in md
    assert report.cli([]) == 2


def test_regenerate_section_from_recorded_settings(generated):
    _, out = generated
    md = out.read_text()
    section = md.split("## How these runs were made", 1)[1].split("```", 2)[1]
    c10 = [ln for ln in section.splitlines() if "cifar10-cpu" in ln]
    # the fixture's results.json predates the recorded options: they are inferred from its methods (two
    # baselines), its searches (no DARTS) and its missing feature-cache timing
    assert c10[0].startswith("RKDSC_THREADS=2 rkdsc train --preset cifar10-cpu --workdir ") and c10[0].endswith(
        "--device cpu --baselines jscc-student,jscc-teacher --skip-darts --no-cache-timing")
    assert c10[1].endswith("profile.json --threads 2 --batches 1,64")
    # ablation: the ratios of its points, the non-default epochs and noise draws
    assert re.search(r"rkdsc ablation --workdir \S+cifar10-cpu --ratios 0\.1,0\.5,0\.9 --epochs 1 --noise-draws 1$",
                     c10[2]), c10[2]
    assert "rkdsc train --preset tinyimagenet-cpu" in section
    assert "missing" not in section  # a run dir that does not exist has no commands


def test_set_flags_round_trip_through_the_cli_parser():
    import shlex

    from rkdsc.common.train.presets import load_preset, parse_set_args, with_overrides

    changed = with_overrides(load_preset("cifar10-cpu"), {
        "seed": 3, "search.epochs": 1, "stage2.channels": ["awgn"], "teacher.checkpoint": "/a b/c.safetensors",
        "teacher.timm_kwargs": {"patch_size": 8, "depth": 2, "num_classes": 256}})
    flags = report.set_flags("cifar10-cpu", changed.to_dict())
    assert len(flags) == 5
    items = [shlex.split(f)[1] for f in flags]
    rebuilt = with_overrides(load_preset("cifar10-cpu"), parse_set_args(items))
    assert rebuilt.to_dict() == changed.to_dict()
    assert report.set_flags("cifar10-cpu", load_preset("cifar10-cpu").to_dict()) == []


def _bench_doc() -> dict:
    net = {e: {"edges": e, "images": 64 * e, "answered": 64 * e, "errors": 0, "images_per_s": rate,
               "latency_ms": {"p50": p50, "p99": 2 * p50}, "accuracy": 0.98}
           for e, rate, p50 in ((1, 250.0, 40.0), (3, 400.0, 90.0))}
    return {"bundle": "b", "bundle_source": "default deploy/bundle", "task": "digits", "images_per_edge": 64,
            "batch_size": 16, "snr_db": 10.0, "fading": "awgn", "notes": ["shared machine"],
            "inprocess": {"images_per_s": 1000.0, "latency_ms": {"p50": 10.0, "p99": 12.0}, "accuracy": 0.99},
            "networked": net,
            "encoder": {"threads": 1, "torch_source": "trained weights",
                        "batches": {"1": {"torch_ms_per_image": 2.0, "ort_ms_per_image": 0.5, "ort_speedup": 4.0,
                                          "max_abs_diff": 1e-6}}},
            "channel": {"symbols_per_frame": 26, "awgn": {"batched_ns_per_symbol": 40.0,
                                                          "per_frame_ns_per_symbol": 2000.0}},
            "wire": {"uplink_bytes_per_image": 288.0, "symbol_payload_bytes": 208, "raw_image_bytes": 3072,
                     "image_file_bytes_mean": 1100.0, "raw_over_wire": 3072 / 288, "file_over_wire": 1100 / 288}}


def test_bench_section_and_its_command(tmp_path, capsys):
    bench_json = tmp_path / "bench.json"
    _write(bench_json, _bench_doc())
    out = tmp_path / "r.md"
    assert report.cli(["--runs", str(tmp_path / "nope"), "--bench", str(bench_json), "--out", str(out)]) == 0
    md = out.read_text()
    section = md.split("## Networked emulator (`rkdsc bench`)", 1)[1].split("\n## ", 1)[0]
    assert "| in-process | 1000.0 | 1.00 | 10.00 | 12.00 | 0.990 |" in section
    assert "| networked, 3 edge(s) | 400.0 | 0.40 | 90.00 | 180.00 | 0.980 |" in section
    assert "| 1 | 2.000 | 0.500 | 4.00 | 1.0e-06 |" in section
    assert "| awgn | 40.0 | 2000.0 | 50.0 |" in section
    assert "10.67x less" in section and "Note: shared machine" in section
    assert f"rkdsc bench --images 64 --edges 1,3 --encoder-batches 1 --threads 1 --out {bench_json}" in md
    # a named input that cannot be read is an error naming the flag and the path
    assert report.cli(["--runs", str(tmp_path / "nope"), "--bench", str(tmp_path / "absent.json"),
                       "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--bench" in err and "absent.json" in err


def test_extra_profile_gets_its_command_and_claims(tmp_path):
    runs = make_runs(tmp_path)
    prof = json.loads((runs[0] / "profile.json").read_text())
    for row in prof["rows"]:
        row["source"], row["dataset"] = "paper-scale", None  # the paper-scale profile has no data set
    prof["specs"] = [{"label": "paper-scale"}]
    prof["settings"].update({"teacher_batches": [1, 8], "repeats": 50})
    extra = tmp_path / "paper-scale.json"
    _write(extra, prof)
    out = tmp_path / "r.md"
    assert report.cli(["--runs", str(tmp_path / "nope"), "--profile", str(extra), "--out", str(out)]) == 0
    md = out.read_text()
    assert f"rkdsc profile --out {extra} --threads 2 --batches 1,64 --teacher-batches 1,8 --repeats 50" in md
    row = next(ln for ln in md.splitlines() if ln.startswith("| the CAT adds") and "paper-scale" in ln)
    assert "| CIFAR10 | paper-scale | 0.78% | 100.00% | **does not hold** |" in row  # 2.0 ms vs 1.0 ms


def test_fig6_curves_keep_the_number_of_images_per_point(tmp_path):
    """The report's Fig. 6 draws Wilson intervals from each point's n: collect_run keeps n from
    eval/<method>-<channel>.json (a plot labelled n=0, without intervals, was the bug)."""
    run_dir = tmp_path / "cifar10-cpu"
    (run_dir / "eval").mkdir(parents=True)
    points = [{"snr_db": -10.0, "accuracy": 0.3, "n": 5000}, {"snr_db": 25.0, "accuracy": 0.5, "n": 4000}]
    (run_dir / "eval" / "rkd-sc-awgn.json").write_text(json.dumps({"channel": "awgn", "points": points}))
    run = report.collect_run(run_dir)
    assert run["curves"]["rkd-sc"]["awgn"] == {-10.0: 0.3, 25.0: 0.5}
    assert run["curve_n"]["rkd-sc"]["awgn"] == {-10.0: 5000, 25.0: 4000}


def test_kept_inputs_regenerate_the_same_report_without_the_runs(tmp_path):
    """--keep-inputs copies each run's report inputs to DIR/<name>/; with the work dirs gone, a
    report over the copies has the same claims, and a large non-summary file is refused."""
    import shutil

    runs = make_runs(tmp_path)
    (runs[0] / "stage1").mkdir()
    (runs[0] / "stage1" / "student.safetensors").write_bytes(b"\0" * 100)  # not a report input
    kept = tmp_path / "docs" / "runs"
    first = report.generate([str(r) for r in runs], tmp_path / "a" / "reproduction.md", keep_inputs=kept)
    assert sorted(p.name for p in kept.iterdir()) == ["cifar10-cpu", "tinyimagenet-cpu"]  # "missing" has none
    assert (kept / "cifar10-cpu" / "search-darts" / "arch.json").is_file()
    assert not (kept / "cifar10-cpu" / "stage1").exists()
    shutil.rmtree(tmp_path / "runs")
    again = report.generate([str(kept / "cifar10-cpu"), str(kept / "tinyimagenet-cpu"), str(runs[2])],
                            tmp_path / "b" / "reproduction.md")
    strip = lambda cs: [{k: v for k, v in c.items() if k != "source"} for c in cs]  # noqa: E731
    assert strip(again["claims"]) == strip(first["claims"])
    assert again["verdict_counts"] == first["verdict_counts"]

    big = tmp_path / "big"
    (big / "eval").mkdir(parents=True)
    with open(big / "eval" / "huge.json", "wb") as f:
        f.truncate(report.SNAPSHOT_MAX_BYTES + 1)
    with pytest.raises(ValueError, match="huge.json"):
        report.snapshot_run(big, tmp_path / "kept-big")
    assert not (tmp_path / "kept-big").exists()


def test_kept_inputs_include_the_extra_profile_and_ablation_files(tmp_path):
    """--keep-inputs also copies the --profile / --ablation files (to DIR/<their folder>/): with
    the originals gone, a report pointed at the copies has the same claims."""
    import shutil

    runs = make_runs(tmp_path)
    extra = tmp_path / "scratch" / "paper-scale"
    extra.mkdir(parents=True)
    shutil.copyfile(runs[0] / "profile.json", extra / "profile.json")
    kept = tmp_path / "docs" / "runs"
    first = report.generate([str(runs[0])], tmp_path / "a" / "reproduction.md", profiles=[str(extra / "profile.json")],
                            keep_inputs=kept)
    assert first["kept"] == [str(kept / "paper-scale" / "profile.json")]
    assert (kept / "paper-scale" / "profile.json").read_bytes() == (extra / "profile.json").read_bytes()
    shutil.rmtree(tmp_path / "scratch")
    again = report.generate([str(kept / "cifar10-cpu")], tmp_path / "b" / "reproduction.md",
                            profiles=[str(kept / "paper-scale" / "profile.json")], keep_inputs=kept)
    strip = lambda cs: [{k: v for k, v in c.items() if k != "source"} for c in cs]  # noqa: E731
    assert strip(again["claims"]) == strip(first["claims"])
    assert again["kept"] == [str(kept / "paper-scale" / "profile.json")]  # already in place: left as it is


@pytest.mark.parametrize("options", [
    {"baselines": ["jscc-student", "jscc-teacher"], "skip_darts": False, "snrs_db": None, "eval_limit": None,
     "time_cache": False},
    {"baselines": [], "skip_darts": True, "snrs_db": [-10.0, 0.0, 25.0], "eval_limit": 200, "time_cache": True},
])
def test_train_flags_round_trip_through_the_cli_parser(options):
    """The reconstructed `rkdsc train` options parse back to the options the run recorded."""
    import shlex

    from rkdsc.common.experiments.evaluate import DEFAULT_SNRS_DB, join_negative_values, parse_snrs
    from rkdsc.common.train.pipeline import BASELINES, build_parser

    recorded = dict(options, snrs_db=options["snrs_db"] or list(DEFAULT_SNRS_DB))
    flags = report.train_flags({"options": recorded})
    argv = ["--preset", "cifar10-cpu", *shlex.split(" ".join(flags))]
    args = build_parser().parse_args(join_negative_values(argv))
    assert ([] if args.skip_baselines else args.baselines) == options["baselines"]
    assert args.skip_darts == options["skip_darts"]
    assert (parse_snrs(args.snr) if args.snr else list(DEFAULT_SNRS_DB)) == recorded["snrs_db"]
    assert args.eval_limit == options["eval_limit"] and args.no_cache_timing == (not options["time_cache"])
    defaults = {"baselines": list(BASELINES), "skip_darts": False, "snrs_db": list(DEFAULT_SNRS_DB),
                "eval_limit": None, "time_cache": True}
    assert report.train_flags({"options": defaults}) == []  # the defaults: no flag


def test_train_flags_of_a_run_recorded_before_the_options_are_inferred():
    old = {"methods": {"rkd-sc": {}, "jscc-student": {}, "jscc-teacher": {}}, "search": {"kdl-darts": {}, "darts": {}},
           "eval": {"snrs_db": [-10.0, -5.0, 0.0, 5.0, 10.0, 15.0, 20.0, 25.0]}, "feature_cache": None}
    assert report.train_flags(old) == ["--baselines jscc-student,jscc-teacher", "--no-cache-timing"]
    tiny = dict(old, methods={"rkd-sc": {}}, feature_cache={"speedup": 1.06})
    assert report.train_flags(tiny) == ["--skip-baselines"]
