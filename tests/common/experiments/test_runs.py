"""rkdsc runs: training work dirs and demo outputs found and listed side by side."""
from __future__ import annotations

import json

from rkdsc.common.experiments import runs


def _train(wd, snrs=(-10.0, 25.0)):
    wd.mkdir(parents=True)
    pts = [{"snr_db": s, "accuracy": 0.5 + 0.01 * s, "n": 50} for s in snrs]
    (wd / "results.json").write_text(json.dumps({
        "preset": "mine", "preset_config": {"data": {"dataset": "folder"}}, "wall_s": 12.0,
        "eval": {"snrs_db": list(snrs), "split": "preset:mine:val", "n": 50},
        "methods": {"rkd-sc": {"encoder_params": 1234, "symbols_per_image": 6,
                               "curves": {"awgn": pts, "rayleigh": pts}}}}))


def _demo(out, accs=(0.9, 0.5)):
    out.mkdir(parents=True)
    txs = [{"id": f"e{i}", "images": 10, "answered": 10, "errors": 0, "labelled": 10, "accuracy": a,
            "latency_ms": {"p50": 10.0 + i, "p99": 20.0 + i}, "snr_db": 5.0} for i, a in enumerate(accs)]
    (out / "summary.json").write_text(json.dumps({"transmitters": txs, "wall_s": 3.0, "ok": True}))


def test_lists_both_kinds_side_by_side(tmp_path, capsys):
    _train(tmp_path / "runs" / "mine")
    _train(tmp_path / "runs" / "other", snrs=(-5.0, 20.0))  # `--snr -5,20`: hi / lo are what was evaluated
    _demo(tmp_path / "runs" / "compose" / "run-1")          # two levels down
    (tmp_path / "runs" / "samples" / "digits").mkdir(parents=True)  # neither: skipped
    assert runs.cli([str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "training runs" in out and "demo runs" in out
    assert out.count("RKD-SC") == 2 and "run-1" in out and "samples" not in out
    assert runs.cli([str(tmp_path / "runs"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    mine = next(r for r in doc["train"] if r["run"].endswith("mine"))
    assert (mine["awgn_hi"], mine["awgn_lo"], mine["n"]) == (0.75, 0.4, 50)
    assert mine["awgn_hi_ci95"][0] < 0.75 < mine["awgn_hi_ci95"][1]
    other = next(r for r in doc["train"] if r["run"].endswith("other"))
    assert (other["snr_hi_db"], other["snr_lo_db"], other["awgn_hi"]) == (20.0, -5.0, 0.7)
    (demo,) = doc["demo"]
    assert (demo["devices"], demo["answered"], demo["labelled"]) == (2, 20, 20)
    assert abs(demo["accuracy"] - 0.7) < 1e-9 and demo["p99_ms"] == 21.0


def test_missing_folder_is_an_error(tmp_path, capsys):
    assert runs.cli([str(tmp_path / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_a_closed_pipe_ends_any_subcommand_quietly(tmp_path):
    """`rkdsc ... | head`: the reader goes away; no BrokenPipeError traceback (handled once in
    rkdsc.common.cli.main for every subcommand), exit status 141 like a tool ended by SIGPIPE."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    for i in range(40):
        _train(tmp_path / "runs" / f"run-{i:02d}")
    for args in (["runs", str(tmp_path / "runs")], ["bundle", "info", str(root / "deploy" / "bundle")]):
        proc = subprocess.Popen([sys.executable, "-m", "rkdsc.common.cli", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        proc.stdout.close()  # before the child writes anything
        err = proc.stderr.read().decode()
        assert proc.wait(60) == 141, err
        assert "Traceback" not in err and "BrokenPipeError" not in err
