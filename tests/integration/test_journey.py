"""The researcher's journey, through the `rkdsc` command only (docs/user-guide.md), at the
smallest scale: an image folder of one's own and a preset file of one's own (the smoke preset's
settings, dataset = "folder"), train (with `--snr -5,20`, which must not crash the summary),
compare runs, write the held-out split as an image folder, evaluate on it with error bars, serve
it with two edge devices (`rkdsc demo`), change one link mid-stream with `rkdsc link set`, and see
the new link SNR in that device's results.

About a minute on 2 CPU cores (training is ~30 s of it).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
RKDSC = [sys.executable, "-m", "rkdsc.common.cli"]
CLASSES = ("circle", "square", "stripes")
pytestmark = pytest.mark.slow


def make_image_folder(root: Path, per_class: int = 30, size: int = 32, seed: int = 0) -> Path:
    """ROOT/<class>/<file>.png: red discs, green squares, blue stripes on noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    for name in CLASSES:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            img = (20 + rng.integers(0, 30, (size, size, 3))).astype(np.uint8)
            cx, cy, r = rng.integers(10, 22), rng.integers(10, 22), rng.integers(5, 9)
            if name == "circle":
                img[(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = (230, 60, 60)
            elif name == "square":
                img[(abs(xx - cx) <= r) & (abs(yy - cy) <= r)] = (60, 200, 60)
            else:
                img[((xx + i) // 3) % 2 == 0] = (60, 60, 230)
            Image.fromarray(img).save(root / name / f"{name}-{i:03d}.png")
    return root


def write_preset(path: Path, data_root: Path) -> Path:
    """The smoke preset's settings, on our own folder."""
    text = (ROOT / "common/train/presets/smoke.toml").read_text()
    text = text.replace('name = "smoke"', 'name = "shapes"').replace('workdir_default = "runs/smoke"',
                                                                     'workdir_default = "runs/shapes"')
    text = text.replace('dataset = "digits"', f'dataset = "folder"\nroot = "{data_root}"')
    text = text.replace("max_per_class = 30", "max_per_class = 0")
    assert 'dataset = "folder"' in text and "max_per_class = 0" in text
    path.write_text(text)
    return path


def rkdsc(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([*RKDSC, *args], capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, f"rkdsc {' '.join(args)} -> {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def env():
    return {**os.environ, "RKDSC_THREADS": "1", "RKDSC_PROGRESS": "0", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, env):
    base = tmp_path_factory.mktemp("journey")
    data = make_image_folder(base / "shapes")
    preset = write_preset(base / "shapes.toml", data)
    wd = base / "wd"
    proc = rkdsc("train", "--preset", str(preset), "--workdir", str(wd), "--device", "cpu", "--skip-baselines",
                 "--skip-darts", "--no-cache-timing", "--snr", "-5,20",
                 "--set", "teacher.train_epochs=3", "--set", "search.epochs=1", "--set", "stage1.epochs=1",
                 "--set", "stage2.epochs=2", env=env, timeout=600)
    return base, data, preset, wd, proc


def test_train_on_own_folder_with_a_short_snr_list(trained):
    base, data, preset, wd, proc = trained
    res = json.loads((wd / "results.json").read_text())
    assert res["preset"] == "shapes" and res["eval"]["snrs_db"] == [-5.0, 20.0]
    assert res["eval"]["n"] == 18  # val_fraction 0.2 of 3 x 30 images
    # the summary table at the end: at the SNRs evaluated, the teacher labelled as the model it is
    assert "AWGN 20 dB" in proc.stdout and "-5 dB" in proc.stdout
    assert "vit_tiny_patch16_224 (img_size=32, patch_size=8" in proc.stdout and "val acc None" not in proc.stdout
    assert res["teacher"]["label"].startswith("vit_tiny_patch16_224 (")
    manifest = json.loads((wd / "bundles" / "rkd-sc" / "manifest.json").read_text())
    assert manifest["tasks"][0]["name"] == "shapes"  # a folder data set: the task is named after the preset
    assert manifest["tasks"][0]["class_names"] == list(CLASSES)
    assert manifest["provenance"]["data"]["root"] == str(data)


def test_runs_lists_the_work_dir(trained, env):
    base, _, _, wd, _ = trained
    out = rkdsc("runs", str(base), env=env).stdout
    assert str(wd) in out and "RKD-SC" in out and "AWGN 20 dB" in out


def test_heldout_split_as_a_folder_and_evaluated_with_error_bars(trained, env):
    base, data, _, wd, _ = trained
    val = base / "val"
    rkdsc("samples", "--workdir", str(wd), "--split", "val", "--out", str(val), env=env)
    files = sorted(p for p in val.rglob("*.png"))
    assert len(files) == 18 and sorted(p.name for p in val.iterdir()) == list(CLASSES)
    train_files = {p.name for p in data.rglob("*.png")}
    assert {p.name for p in files} <= train_files  # the original files, copied

    ev = base / "heldout.json"
    rkdsc("evaluate", "--workdir", str(wd), "--channel", "awgn", "--snr", "-5,20", "--out", str(ev),
          "--plot", str(base / "heldout.png"), "--no-progress", env=env)
    doc = json.loads(ev.read_text())
    assert doc["data"] == "preset:shapes:val"
    for p in doc["points"]:
        assert p["n"] == 18 and p["ci95"][0] <= p["accuracy"] <= p["ci95"][1]
    assert (base / "heldout.png").read_bytes()[:4] == b"\x89PNG"
    # the same images as a folder give the same numbers
    ev2 = base / "heldout-folder.json"
    proc = rkdsc("evaluate", "--bundle", str(wd / "bundles" / "rkd-sc"), "--data", str(val), "--snr", "-5,20",
                 "--out", str(ev2), "--no-progress", env=env)
    assert "warning" not in proc.stderr
    assert [p["accuracy"] for p in json.loads(ev2.read_text())["points"]] == [p["accuracy"] for p in doc["points"]]
    # pointing --data at the training folder warns
    proc = rkdsc("evaluate", "--bundle", str(wd / "bundles" / "rkd-sc"), "--data", str(data), "--snr", "20",
                 "--out", str(base / "mixed.json"), "--no-progress", env=env)
    assert "training image folder" in proc.stderr and "--workdir" in proc.stderr
    assert json.loads((base / "mixed.json").read_text())["warnings"]


def test_serve_two_edges_and_change_a_link_mid_stream(trained, env):
    base, _, _, wd, _ = trained
    val = base / "val"
    if not val.is_dir():
        rkdsc("samples", "--workdir", str(wd), "--split", "val", "--out", str(val), env=env)
    topo = base / "topology.toml"
    # airtime 6 symbols / 20 Hz = 0.3 s per frame, one frame in flight: the far edge streams slowly
    topo.write_text(f"""
[bundle]
path = "{wd / 'bundles' / 'rkd-sc'}"

[basestation]
symbol_rate_hz = 20.0

[[transmitters]]
id = "edge-near"
task = "shapes"
snr_db = 20.0
images = "{val}"

[[transmitters]]
id = "edge-far"
task = "shapes"
snr_db = 20.0
fading = "rician"
rician_k = 4.0
images = "{val}"
batch_size = 1
max_in_flight = 1
""")
    out = base / "demo"
    demo = subprocess.Popen([*RKDSC, "demo", "--config", str(topo), "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    try:
        ready = out / "run" / "relay.json"
        deadline = time.monotonic() + 120
        while not ready.is_file():
            assert demo.poll() is None, demo.stdout.read()
            assert time.monotonic() < deadline, "relay not ready"
            time.sleep(0.1)
        relay = f"127.0.0.1:{json.loads(ready.read_text())['port']}"
        while True:  # a few frames through the far link, then change it
            state = json.loads(rkdsc("link", "get", "edge-far", "--relay", relay, "--json", env=env).stdout)
            if state["frames"] >= 3:
                break
            assert demo.poll() is None and time.monotonic() < deadline, "edge-far did not stream"
            time.sleep(0.1)
        assert state["rician_k"] == 4.0 and state["fading"] == "rician"
        new = json.loads(rkdsc("link", "set", "edge-far", "--snr", "-30", "--relay", relay, "--json", env=env).stdout)
        assert new["effective_snr_db"] == -30.0 and new["frames"] < 18
        listing = rkdsc("link", "list", "--relay", relay, env=env).stdout
        assert "edge-near" in listing and "-30.00" in listing
        stdout, _ = demo.communicate(timeout=180)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert demo.returncode == 0, stdout[-3000:]
    assert "95% CI" in stdout  # the demo's table says how sure its accuracies are
    summary = json.loads((out / "summary.json").read_text())
    rows = {t["id"]: t for t in summary["transmitters"]}
    assert rows["edge-near"]["answered"] == rows["edge-far"]["answered"] == 18
    assert rows["edge-near"]["labelled"] == 18 and rows["edge-near"]["accuracy_ci95"] is not None

    def link_snrs(tx: str) -> list[float]:
        lines = (out / "edges" / tx / "results.jsonl").read_text().splitlines()
        return [json.loads(line)["link_snr_db"] for line in lines]

    assert set(link_snrs("edge-near")) == {20.0}
    far = link_snrs("edge-far")
    first = far.index(-30.0)  # the change took effect mid-stream, and stayed
    assert 3 <= first < len(far) and set(far[:first]) == {20.0} and set(far[first:]) == {-30.0}
    assert "demo runs" in rkdsc("runs", str(out), env=env).stdout
