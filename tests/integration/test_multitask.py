"""Issue 12 acceptance: one edge server serving two tasks of different input sizes (digits 32 px,
shapes 48 px) to three edge devices over localhost gRPC through the relay: every image answered,
each device's predictions and per-task accuracy equal to the in-process pipeline's for the same
seeds; the server batches per task; the demo runs the multi-task topology as processes."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from rkdsc.common.bundle import InProcessPipeline, load_bundle
from rkdsc.common.data.images import list_images, load_rgb, preprocess
from rkdsc.edge.client import EdgeClient
from tests.conftest import Services, metric, write_toml

TRANSMITTERS = [  # three devices over two tasks (the paper's Fig. 1 with one data set per transmitter)
    {"id": "edge-digits", "task": "digits", "snr_db": 20.0, "fading": "awgn", "seed": 21, "batch_size": 4},
    {"id": "edge-shapes-near", "task": "shapes", "snr_db": 10.0, "fading": "rayleigh", "seed": 22, "batch_size": 5},
    {"id": "edge-shapes-far", "task": "shapes", "snr_db": -5.0, "fading": "awgn", "seed": 23, "batch_size": 3},
]


@pytest.fixture(scope="module")
def multitask(multitask_bundle_dir):
    return load_bundle(multitask_bundle_dir)


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory, multitask):
    from rkdsc.common.data.samples import write_shapes_samples

    h, _ = multitask.task("shapes").input.size
    out = tmp_path_factory.mktemp("samples") / "shapes"
    write_shapes_samples(out, count=24, size=h)
    return out


def in_process(bundle, tx, images_dir):
    """file -> (probs, label index) from InProcessPipeline with the link's seed, one image (one
    channel draw) at a time in file order: what the relay draws for this transmitter."""
    spec = bundle.task(tx.task)
    pipe = InProcessPipeline(bundle, tx.task, seed=tx.seed)
    listing = list_images(images_dir, check=False)
    out = {}
    for path, label in zip(listing.paths, listing.labels):
        x = preprocess(load_rgb(path), spec.input)[None]  # this task's own size and normalisation
        r = pipe.run(x, tx.effective_snr_db, tx.fading)
        out[str(path.relative_to(images_dir))] = (r["probs"][0], spec.label_index(listing.class_names[label]))
    return out


def test_one_server_two_tasks_three_edges(multitask, multitask_bundle_dir, sample_dir, shapes_dir, tmp_path):
    assert multitask.task("digits").input.size != multitask.task("shapes").input.size
    images = {"digits": sample_dir, "shapes": shapes_dir}
    txs = [{**t, "images": str(images[t["task"]])} for t in TRANSMITTERS]
    from rkdsc.common.config import load_config

    path = write_toml(tmp_path / "topology.toml", {}, {
        "bundle": {"path": str(multitask_bundle_dir)},
        "server": {"host": "127.0.0.1", "port": 0, "metrics_port": 0, "max_batch": 8, "max_wait_ms": 2.0},
        "basestation": {"host": "127.0.0.1", "port": 0, "metrics_port": 0}}, txs)
    cfg = load_config(path, env={})
    svc = Services(cfg, multitask)
    try:
        from rkdsc.v1 import emulator_pb2 as pb

        info = svc.server_stub.GetInfo(pb.InfoRequest(), timeout=10)
        assert [(t.name, t.symbols_per_image) for t in info.tasks] == [("digits", 6), ("shapes", 16)]

        summaries, errors = {}, []

        def run(tx):
            try:
                summaries[tx.id] = EdgeClient(cfg, tx, bundle=multitask, frame_id_base=0).run(tx.images, tmp_path / tx.id)
            except Exception as exc:  # pragma: no cover - surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(tx,)) for tx in cfg.transmitters]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors and len(summaries) == 3

        per_task_net: dict[str, list[bool]] = {"digits": [], "shapes": []}
        per_task_ref: dict[str, list[bool]] = {"digits": [], "shapes": []}
        for tx in cfg.transmitters:
            records = [json.loads(line) for line in (tmp_path / tx.id / "results.jsonl").read_text().splitlines()]
            n = len(list_images(tx.images, check=False).paths)
            assert len(records) == n == summaries[tx.id]["answered"]  # every image answered
            assert all(r["error"] is None and r["task"] == tx.task for r in records)
            spec = multitask.task(tx.task)
            assert summaries[tx.id]["symbols_per_image"] == spec.symbols_per_image
            assert summaries[tx.id]["raw_image_bytes"] == 3 * spec.input.size[0] * spec.input.size[1]
            ref = in_process(multitask, tx, tx.images)
            for r in records:
                probs, label = ref[r["file"]]
                assert r["predicted_index"] == int(np.argmax(probs)), (tx.id, r["file"])
                assert [s for _, s in r["top_k"]] == pytest.approx(sorted(probs.tolist(), reverse=True)[:3], abs=1e-4)
                assert r["label_index"] == label is not None  # class folders map onto the task's class names
                per_task_net[tx.task].append(bool(r["correct"]))
                per_task_ref[tx.task].append(int(np.argmax(probs)) == label)
        for task in ("digits", "shapes"):
            assert len(per_task_net[task]) == (24 if task == "digits" else 48)
            assert np.mean(per_task_net[task]) == np.mean(per_task_ref[task])  # per-task accuracy equal

        server = svc.metrics("server")
        for tx in cfg.transmitters:
            n = len(list_images(tx.images, check=False).paths)
            lab = {"transmitter": tx.id, "task": tx.task}
            assert metric(server, "rkdsc_frames_total", outcome="ok", **lab) == n
            assert metric(server, "rkdsc_symbols_total", **lab) == n * multitask.task(tx.task).symbols_per_image
        # batching per task: each task's batcher decoded exactly its own frames
        assert metric(server, "rkdsc_batch_size_sum", task="digits") == 24
        assert metric(server, "rkdsc_batch_size_sum", task="shapes") == 48
    finally:
        svc.close()


def test_relay_validates_symbols_per_task(multitask, multitask_bundle_dir, sample_dir, tmp_path):
    """A frame carrying the digits task's symbol count under the shapes task is refused, naming the field."""
    import grpc

    from rkdsc.common import channel
    from rkdsc.common.config import load_config
    from rkdsc.common.wire import encode_tensor
    from rkdsc.v1 import emulator_pb2 as pb

    path = write_toml(tmp_path / "t.toml", {}, {
        "bundle": {"path": str(multitask_bundle_dir)},
        "server": {"host": "127.0.0.1", "port": 0, "metrics_port": -1},
        "basestation": {"host": "127.0.0.1", "port": 0, "metrics_port": -1}},
        [{**TRANSMITTERS[1], "images": str(sample_dir)}])
    cfg = load_config(path, env={})
    svc = Services(cfg, multitask)
    try:
        k_digits = multitask.task("digits").symbols_per_image
        z = channel.normalize_power(np.ones((1, k_digits), np.complex64)).astype(np.complex64)[0]
        data, dtype, shape = encode_tensor(z)
        frame = pb.Frame(transmitter_id="edge-shapes-near", task="shapes", frame_id=1,
                         symbols=pb.Tensor(data=data, dtype=dtype, shape=shape), encoder_snr_db=10.0)
        with pytest.raises(grpc.RpcError) as exc:
            svc.relay_stub.TransmitOne(frame, timeout=10)
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert exc.value.details().startswith("symbols") and "16" in exc.value.details(), exc.value.details()
    finally:
        svc.close()


def test_demo_runs_two_tasks_and_prints_accuracy_per_task(multitask_bundle_dir, tmp_path, monkeypatch, capsys):
    from rkdsc.common.experiments.demo import run_demo

    monkeypatch.chdir(tmp_path)
    # no `images`: the default samples folders runs/samples/<task> are generated at each task's size
    config = write_toml(tmp_path / "two.toml", {}, {"bundle": {"path": str(multitask_bundle_dir)},
                                                    "server": {"max_wait_ms": 1.0}}, [
        {"id": "near", "task": "digits", "snr_db": 20.0, "fading": "awgn", "seed": 1, "limit": 8, "batch_size": 4},
        {"id": "mid", "task": "shapes", "snr_db": 5.0, "fading": "rayleigh", "seed": 2, "limit": 8, "batch_size": 4},
        {"id": "far", "task": "shapes", "snr_db": -5.0, "fading": "awgn", "seed": 3, "limit": 6, "batch_size": 4},
    ])
    summary = run_demo(config, tmp_path / "demo")
    text = capsys.readouterr().out
    assert summary["ok"] is True
    shapes_png = sorted((tmp_path / "runs" / "samples" / "shapes").rglob("*.png"))
    assert len(shapes_png) == 400
    from PIL import Image

    with Image.open(shapes_png[0]) as im:
        assert im.size == (48, 48)  # the shapes task's input size in this bundle
    rows = {r["id"]: r for r in summary["transmitters"]}
    assert all(r["answered"] == r["images"] and r["errors"] == 0 for r in rows.values())
    tasks = {t["task"]: t for t in summary["tasks"]}
    assert list(tasks) == ["digits", "shapes"]
    assert tasks["shapes"]["transmitters"] == ["mid", "far"] and tasks["shapes"]["images"] == 14
    assert tasks["shapes"]["correct"] == rows["mid"]["correct"] + rows["far"]["correct"]
    assert tasks["shapes"]["accuracy"] == pytest.approx(tasks["shapes"]["correct"] / 14)
    header = next(line for line in text.splitlines() if line.startswith("task") and "devices" in line)
    assert "accuracy" in header
    assert any(line.startswith("shapes") and line.split()[1] == "2" for line in text.splitlines())


def test_server_refuses_a_topology_task_its_bundle_lacks(bundle, bundle_dir, sample_dir, tmp_path):
    from rkdsc.common.bundle import BundleError
    from rkdsc.common.config import load_config
    from rkdsc.server.service import create_server

    path = write_toml(tmp_path / "t.toml", {}, {
        "bundle": {"path": str(bundle_dir)}, "server": {"host": "127.0.0.1", "port": 0, "metrics_port": -1}},
        [{"id": "a", "task": "digits", "images": str(sample_dir)}, {"id": "b", "task": "shapes", "images": str(sample_dir)}])
    with pytest.raises(BundleError, match=r"transmitters\[1\]\.task: unknown task 'shapes' \(transmitter 'b'\) "
                                          r"in bundle .*; known tasks: digits"):
        create_server(load_config(path, env={}), bundle=bundle)


def test_task_rows_pool_devices_and_weight_symbols_by_answered_images():
    from rkdsc.common.experiments.demo import task_rows

    rows = [{"id": "a", "task": "d", "images": 10, "answered": 10, "errors": 0, "labelled": 10, "correct": 9,
             "symbols_per_image": 26.0},
            {"id": "b", "task": "s", "images": 4, "answered": 4, "errors": 0, "labelled": 4, "correct": 1,
             "symbols_per_image": 26},
            {"id": "c", "task": "d", "images": 5, "answered": 5, "errors": 0, "labelled": 5, "correct": 5,
             "symbols_per_image": 64.0}]
    d, s = task_rows(rows)
    assert (d["task"], d["transmitters"], d["images"], d["correct"]) == ("d", ["a", "c"], 15, 14)
    assert d["accuracy"] == pytest.approx(14 / 15) and d["symbols_per_image"] == pytest.approx((26 * 10 + 64 * 5) / 15)
    assert d["accuracy_ci95"][0] < 14 / 15 < d["accuracy_ci95"][1]
    assert (s["accuracy"], s["symbols_per_image"]) == (0.25, 26)
