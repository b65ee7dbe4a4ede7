"""rkdsc evaluate (contract item 8): JSON shape, n, label mapping, determinism, plots, errors."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from rkdsc.common.experiments.evaluate import DEFAULT_SNRS_DB, cli, parse_snrs


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    from rkdsc.common.bundle.export import build_random_bundle

    root = tmp_path_factory.mktemp("eval-bundles")
    a = build_random_bundle(root / "a", seed=0)  # ONNX export takes seconds: build one, copy it
    return a, shutil.copytree(a, root / "b")


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    from rkdsc.common.data.samples import write_samples

    out = tmp_path_factory.mktemp("eval-data") / "digits"
    write_samples(out, count=60, size=32)
    return out


def _count_images(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*.png"))


def test_contract_json_and_plot(bundles, digits_dir, tmp_path):
    out, png = tmp_path / "awgn.json", tmp_path / "awgn.png"
    rc = cli(["--bundle", str(bundles[0]), "--data", str(digits_dir), "--channel", "awgn",
              "--out", str(out), "--plot", str(png), "--no-progress"])
    assert rc == 0
    res = json.loads(out.read_text())
    assert {"bundle", "channel", "points"} <= set(res)
    assert res["bundle"] == str(bundles[0]) and res["channel"] == "awgn"
    assert [p["snr_db"] for p in res["points"]] == DEFAULT_SNRS_DB  # -10, -5, ..., 25 by default
    n = _count_images(digits_dir)
    for p in res["points"]:
        assert set(p) == {"snr_db", "accuracy", "n", "ci95"}  # ci95: the 95 % Wilson interval
        assert p["ci95"][0] <= p["accuracy"] <= p["ci95"][1]
        assert p["n"] == n == 60
        assert 0.0 <= p["accuracy"] <= 1.0
        assert abs(p["accuracy"] * n - round(p["accuracy"] * n)) < 1e-9  # a count of correct images
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_accuracy_matches_direct_onnx_run_and_label_mapping(bundles, digits_dir, tmp_path):
    """Only classes 3 and 7: labels must map by folder NAME onto the bundle's class_names (3, 7),
    not by position (0, 1). At 80 dB the channel is transparent, so the accuracy must equal a
    direct edge -> server run on the clean symbols."""
    from rkdsc.common.bundle.runtime import EdgeModel, ServerModel, load_bundle
    from rkdsc.common.data.images import list_images, load_rgb, preprocess

    sub = tmp_path / "sub"
    for c in ("3", "7"):
        shutil.copytree(digits_dir / c, sub / c)
    out = tmp_path / "hi.json"
    assert cli(["--bundle", str(bundles[1]), "--data", str(sub), "--snr", "80", "--out", str(out), "--no-progress"]) == 0
    got = json.loads(out.read_text())["points"][0]

    b = load_bundle(bundles[1])
    listing = list_images(sub)
    x = np.stack([preprocess(load_rgb(p), b.input) for p in listing.paths])
    labels = np.array([int(listing.class_names[i]) for i in listing.labels])  # "3" -> 3, "7" -> 7
    snr = np.full(len(x), 80.0, np.float32)
    pred = ServerModel(b).decode(EdgeModel(b).encode(x, snr), snr).argmax(1)
    assert got["n"] == len(x)
    assert got["accuracy"] == pytest.approx(float((pred == labels).mean()), abs=1e-12)


def test_several_bundles_share_noise_and_are_deterministic(bundles, digits_dir, tmp_path):
    args = ["--bundle", str(bundles[0]), "--label", "A", "--bundle", str(bundles[1]), "--label", "B",
            "--data", str(digits_dir), "--channel", "rayleigh", "--snr", "-5,5,15", "--limit", "40", "--seed", "3",
            "--no-progress"]
    assert cli(args + ["--out", str(tmp_path / "1.json"), "--plot", str(tmp_path / "fig6.png")]) == 0
    assert cli(args + ["--out", str(tmp_path / "2.json")]) == 0
    r1, r2 = (json.loads((tmp_path / f).read_text()) for f in ("1.json", "2.json"))
    assert r1["curves"] == r2["curves"]  # same seed -> same noise -> same numbers
    assert [c["label"] for c in r1["curves"]] == ["A", "B"]
    assert all(p["n"] == 40 for c in r1["curves"] for p in c["points"])
    assert r1["points"] == r1["curves"][0]["points"] and r1["channel"] == "rayleigh"
    assert (tmp_path / "fig6.png").stat().st_size > 5000


def test_errors_name_the_problem(bundles, digits_dir, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(digits_dir / "1", bad / "1")
    shutil.copytree(digits_dir / "2", bad / "cat")
    assert cli(["--bundle", str(bundles[0]), "--data", str(bad), "--out", str(tmp_path / "x.json")]) == 2
    assert "'cat'" in capsys.readouterr().err
    assert cli(["--bundle", str(bundles[0]), "--data", str(digits_dir), "--snr", "1,x",
                "--out", str(tmp_path / "x.json")]) == 2
    assert "--snr" in capsys.readouterr().err
    broken = tmp_path / "broken"
    shutil.copytree(bundles[0], broken)
    onnx_file = next(broken.glob("*.edge.onnx"))
    onnx_file.write_bytes(onnx_file.read_bytes()[:-10] + b"0123456789")
    assert cli(["--bundle", str(broken), "--data", str(digits_dir), "--out", str(tmp_path / "x.json")]) == 2
    assert onnx_file.name in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_parse_snrs():
    assert parse_snrs("-10,-5,0") == [-10.0, -5.0, 0.0]
    assert parse_snrs("-10:25:5") == DEFAULT_SNRS_DB
    with pytest.raises(ValueError, match="--snr"):
        parse_snrs("")


def test_class_folders_may_be_named_by_the_data_sets_class_ids(bundles, digits_dir, tmp_path):
    """A manifest task with class_ids (e.g. Tiny-ImageNet's wnids next to the words): a data
    folder laid out by ids evaluates exactly like the same images laid out by names, the edge
    maps the same folders onto the same labels, and verify refuses ids that do not fit."""
    from rkdsc.common.bundle import load_bundle, validate_manifest
    from rkdsc.common.config import TransmitterConfig, parse_config
    from rkdsc.edge.client import EdgeClient

    bundle = tmp_path / "with-ids"
    shutil.copytree(bundles[0], bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    names = manifest["tasks"][0]["class_names"]
    ids = [f"n0{i:07d}" for i in range(len(names))]
    manifest["tasks"][0]["class_ids"] = ids
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    by_id = tmp_path / "by-id"
    for i, name in enumerate(names):
        if (digits_dir / name).is_dir():
            shutil.copytree(digits_dir / name, by_id / ids[i])
    results = []
    for data in (digits_dir, by_id):
        out = tmp_path / f"{data.name}.json"
        assert cli(["--bundle", str(bundle), "--data", str(data), "--snr", "0,20", "--out", str(out),
                    "--no-progress"]) == 0
        results.append(json.loads(out.read_text())["points"])
    assert results[0] == results[1] and results[0][0]["n"] == 60

    spec = load_bundle(bundle).task()
    assert spec.class_ids == tuple(ids) and spec.label_index(ids[3]) == spec.label_index(names[3]) == 3
    cfg = parse_config({"bundle": {"path": str(bundle)}, "transmitters": [{"id": "e", "images": str(by_id)}]})
    entries, _ = EdgeClient(cfg, cfg.transmitter("e"), bundle=load_bundle(bundle)).list_entries(by_id)
    assert sorted({e.label for e in entries}) == list(range(len(names)))

    bad = dict(manifest, tasks=[dict(manifest["tasks"][0], class_ids=ids[:-1])])
    assert any(p.startswith("tasks[0].class_ids: expected 10 distinct ids") for p in validate_manifest(bad))


def test_rkdsc_threads_sets_onnxruntime_threads_and_leaves_results_unchanged(bundles, digits_dir, tmp_path,
                                                                              monkeypatch):
    from rkdsc.common.process import env_threads

    monkeypatch.delenv("RKDSC_THREADS", raising=False)
    assert env_threads() is None  # onnxruntime's default
    args = ["--bundle", str(bundles[0]), "--data", str(digits_dir), "--channel", "awgn", "--snr", "0,10",
            "--limit", "40", "--no-progress"]
    assert cli(args + ["--out", str(tmp_path / "default.json")]) == 0
    monkeypatch.setenv("RKDSC_THREADS", "1")
    assert env_threads() == 1
    assert cli(args + ["--out", str(tmp_path / "one.json")]) == 0
    default, one = (json.loads((tmp_path / f).read_text()) for f in ("default.json", "one.json"))
    assert default["points"] == one["points"]  # the thread count changes speed, not results
    for bad in ("0", "two"):
        monkeypatch.setenv("RKDSC_THREADS", bad)
        with pytest.raises(ValueError, match=f"RKDSC_THREADS.*{bad}"):
            env_threads()
