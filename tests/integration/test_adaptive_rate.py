"""Issue 12 item 5: several codecs (compression ratios) of one task in one bundle; the edge picks
one per frame from the relay's SNR feedback by the manifest's rate policy; results record the
codec and its symbol count; the relay and the server validate and decode per codec."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from rkdsc.common.bundle import InProcessPipeline, load_bundle
from rkdsc.common.bundle.codecs import fewest_symbols_policy
from rkdsc.common.bundle.manifest import read_manifest, validate_manifest, verify_bundle, write_manifest
from rkdsc.common.data.images import list_images, load_rgb, preprocess
from rkdsc.edge.client import EdgeClient
from tests.conftest import Services, metric, write_toml


# ----------------------------------------------------------------------------- the policy

def test_fewest_symbols_within_margin():
    acc = {"small": {-5.0: 0.30, 5.0: 0.80, 20.0: 0.95},
           "mid": {-5.0: 0.50, 5.0: 0.90, 20.0: 0.96},
           "big": {-5.0: 0.70, 5.0: 0.91, 20.0: 0.96}}
    sym = {"small": 6, "mid": 26, "big": 64}
    p = fewest_symbols_policy(acc, sym, margin=0.02)
    # -5 dB: only big is within 0.02 of 0.70; 5 dB: mid (0.90 >= 0.91 - 0.02); 20 dB: small (0.95 >= 0.94)
    assert p["table"] == [{"snr_db": -5.0, "codec": "big"}, {"snr_db": 5.0, "codec": "mid"},
                          {"snr_db": 20.0, "codec": "small"}]
    assert fewest_symbols_policy(acc, sym, margin=1.0)["table"] == [{"snr_db": -5.0, "codec": "small"}]
    assert fewest_symbols_policy(acc, sym, margin=0.0)["table"][0] == {"snr_db": -5.0, "codec": "big"}
    with pytest.raises(ValueError, match=r"accuracy\['\w+'\]: expected the SNRs \[-5.0, 0.0, 5.0, 20.0\]"):
        fewest_symbols_policy({**acc, "mid": {0.0: 1.0}}, sym, 0.02)


def test_choose_codec_follows_the_table(codecs_bundle_dir):
    spec = load_bundle(codecs_bundle_dir).task("digits")
    assert spec.codec_names == ["cr-0.8", "cr-0.5"] and spec.default_codec.name == "cr-0.8"
    assert [spec.choose_codec(s).name for s in (-30.0, -10.0, 9.99, 10.0, 25.0)] == \
        ["cr-0.5", "cr-0.5", "cr-0.5", "cr-0.8", "cr-0.8"]
    assert (spec.codec("cr-0.5").symbols_per_image, spec.codec("cr-0.8").symbols_per_image) == (16, 6)


def test_manifest_codec_checks_name_the_key(codecs_bundle_dir, tmp_path):
    m = read_manifest(codecs_bundle_dir)
    assert validate_manifest(m) == []
    bad = json.loads(json.dumps(m))
    bad["tasks"][0]["rate_policy"]["table"][1]["codec"] = "cr-0.1"
    assert any(p.startswith("tasks[0].rate_policy.table[1].codec: expected one of the task's codecs")
               for p in validate_manifest(bad))
    bad = json.loads(json.dumps(m))
    bad["tasks"][0]["codecs"][1]["compact_dim"] = 31
    problems = validate_manifest(bad)
    assert any(p.startswith("tasks[0].codecs[1].compact_dim: expected floor(feature_dim") for p in problems), problems
    bad = json.loads(json.dumps(m))
    bad["tasks"][0]["rate_policy"]["table"].reverse()
    assert any("tasks[0].rate_policy.table: expected rows in strictly ascending snr_db" in p
               for p in validate_manifest(bad))
    # a codec's compact_dim against its own ONNX graphs (consistent manifest, wrong model)
    other = tmp_path / "b"
    shutil.copytree(codecs_bundle_dir, other)
    m2 = read_manifest(other)
    m2["tasks"][0]["codecs"][1]["edge"] = "digits.cr-0.8.edge"  # the 12-value encoder under a 32-value codec
    m2["components"]["digits.cr-0.8.edge"].pop("outputs")      # (no declared shape: only the graph can tell)
    write_manifest(other, m2)
    problems = verify_bundle(other)
    assert any("tasks[0].codecs[1].compact_dim: expected 12" in p and "digits.cr-0.8.edge.onnx" in p
               for p in problems), problems


# ----------------------------------------------------------------------------- networked

def _reference(bundle, tx, images_dir, codec):
    spec = bundle.task(tx.task)
    pipe = InProcessPipeline(bundle, tx.task, seed=tx.seed, codec=codec)
    out = {}
    for path in list_images(images_dir, check=False).paths:
        r = pipe.run(preprocess(load_rgb(path), spec.input)[None], tx.effective_snr_db, tx.fading)
        out[str(path.relative_to(images_dir))] = r["probs"][0]
    return out


def test_edges_pick_the_codec_from_the_link_snr(codecs_bundle_dir, sample_dir, tmp_path):
    from rkdsc.common.config import load_config

    bundle = load_bundle(codecs_bundle_dir)
    path = write_toml(tmp_path / "t.toml", {}, {
        "bundle": {"path": str(codecs_bundle_dir)},
        "server": {"host": "127.0.0.1", "port": 0, "metrics_port": 0, "max_batch": 8},
        "basestation": {"host": "127.0.0.1", "port": 0, "metrics_port": 0}}, [
        {"id": "near", "task": "digits", "snr_db": 20.0, "fading": "awgn", "seed": 31, "batch_size": 4,
         "images": str(sample_dir)},
        {"id": "far", "task": "digits", "snr_db": 0.0, "fading": "awgn", "seed": 32, "batch_size": 4,
         "images": str(sample_dir)}])
    cfg = load_config(path, env={})
    svc = Services(cfg, bundle)
    try:
        from rkdsc.v1 import emulator_pb2 as pb

        info = svc.server_stub.GetInfo(pb.InfoRequest(), timeout=10).tasks[0]
        assert [(c.name, c.symbols_per_image) for c in info.codecs] == [("cr-0.8", 6), ("cr-0.5", 16)]
        want = {"near": ("cr-0.8", 6), "far": ("cr-0.5", 16)}
        for tx in cfg.transmitters:
            summary = EdgeClient(cfg, tx, bundle=bundle, frame_id_base=0).run(sample_dir, tmp_path / tx.id)
            assert summary["answered"] == summary["images"] == 24
            codec, k = want[tx.id]
            assert summary["codecs"] == {codec: 24} and summary["symbols_per_image"] == k
            records = [json.loads(line) for line in (tmp_path / tx.id / "results.jsonl").read_text().splitlines()]
            ref = _reference(bundle, tx, sample_dir, codec)
            for r in records:
                assert (r["codec"], r["symbols"]) == (codec, k)
                assert r["predicted_index"] == int(np.argmax(ref[r["file"]])), (tx.id, r["file"])
        server = svc.metrics("server")
        assert metric(server, "rkdsc_symbols_total", transmitter="near", task="digits") == 24 * 6
        assert metric(server, "rkdsc_symbols_total", transmitter="far", task="digits") == 24 * 16
    finally:
        svc.close()


def test_relay_and_server_check_the_codec(codecs_bundle_dir, sample_dir, tmp_path):
    import grpc

    from rkdsc.common import channel
    from rkdsc.common.config import load_config
    from rkdsc.common.wire import encode_tensor
    from rkdsc.v1 import emulator_pb2 as pb

    bundle = load_bundle(codecs_bundle_dir)
    path = write_toml(tmp_path / "t.toml", {}, {
        "bundle": {"path": str(codecs_bundle_dir)},
        "server": {"host": "127.0.0.1", "port": 0, "metrics_port": -1},
        "basestation": {"host": "127.0.0.1", "port": 0, "metrics_port": -1}},
        [{"id": "a", "task": "digits", "snr_db": 10.0, "images": str(sample_dir)}])
    svc = Services(load_config(path, env={}), bundle)
    try:
        def frame(k: int, codec: str, fid: int) -> pb.Frame:
            z = channel.normalize_power(np.ones((1, k), np.complex64)).astype(np.complex64)[0]
            data, dtype, shape = encode_tensor(z)
            return pb.Frame(transmitter_id="a", task="digits", frame_id=fid, codec=codec,
                            symbols=pb.Tensor(data=data, dtype=dtype, shape=shape), encoder_snr_db=10.0)

        with pytest.raises(grpc.RpcError) as exc:
            svc.relay_stub.TransmitOne(frame(6, "cr-0.1", 1), timeout=10)
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert exc.value.details().startswith("codec: unknown codec 'cr-0.1' of task 'digits'"), exc.value.details()
        with pytest.raises(grpc.RpcError) as exc:
            svc.relay_stub.TransmitOne(frame(6, "cr-0.5", 2), timeout=10)  # cr-0.5 sends 16 symbols
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT and exc.value.details().startswith("symbols")
        res = svc.relay_stub.TransmitOne(frame(16, "cr-0.5", 3), timeout=10)
        assert (res.codec, res.symbols_per_image, res.error.code) == ("cr-0.5", 16, 0)
        res = svc.relay_stub.TransmitOne(frame(6, "", 4), timeout=10)  # "" = the default codec
        assert (res.codec, res.symbols_per_image) == ("cr-0.8", 6)
    finally:
        svc.close()


def test_adaptive_evaluation_picks_per_snr_and_matches_the_fixed_codecs(codecs_bundle_dir, tmp_path):
    """`rkdsc adaptive eval`: the adaptive point at each SNR is exactly the chosen fixed codec's point."""
    from rkdsc.common.bundle.export import CLIP_MEAN, CLIP_STD
    from rkdsc.common.experiments.adaptive import evaluate, markdown, plot
    from rkdsc.common.train.presets import load_preset

    preset = load_preset("default", {"data.mean": list(CLIP_MEAN), "data.std": list(CLIP_STD)})
    doc = evaluate(str(codecs_bundle_dir), preset, [0.0, 20.0], "awgn")
    assert doc["n"] == 359 and [c["name"] for c in doc["codecs"]] == ["cr-0.8", "cr-0.5"]
    low, high = doc["points"]
    assert (low["adaptive"]["codec"], low["adaptive"]["symbols_per_image"]) == ("cr-0.5", 16)
    assert (high["adaptive"]["codec"], high["adaptive"]["symbols_per_image"]) == ("cr-0.8", 6)
    assert low["adaptive"]["accuracy"] == low["fixed"]["cr-0.5"] and high["adaptive"]["accuracy"] == high["fixed"]["cr-0.8"]
    assert "| 0 | " in markdown(doc) and "cr-0.5 (16)" in markdown(doc)
    plot(doc, str(tmp_path / "a.png"))
    assert (tmp_path / "a.png").stat().st_size > 1000
    with pytest.raises(ValueError, match=r"differs from preset 'default'"):
        evaluate(str(codecs_bundle_dir), load_preset("default"), [0.0], "awgn")


def test_bundle_info_lists_codecs_and_policy(codecs_bundle_dir, capsys):
    from rkdsc.common.bundle.cli import cli

    assert cli(["info", str(codecs_bundle_dir)]) == 0
    out = capsys.readouterr().out
    assert "codec cr-0.8: compression_ratio 0.8, compact_dim 12, symbols_per_image 6" in out and "(default)" in out
    assert "codec cr-0.5: compression_ratio 0.5, compact_dim 32, symbols_per_image 16" in out
    assert "rate policy fewest-symbols-within-margin (margin 0.02, awgn): >= -10 dB cr-0.5, >= 10 dB cr-0.8" in out
