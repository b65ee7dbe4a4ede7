"""T-DeepSC and RTSC at smoke scale: `rkdsc baseline` trains them end to end through the channel,
`rkdsc export` writes bundles that verify and deploy the trained modules, and the bundles serve
over localhost gRPC (`rkdsc demo`'s run_demo), answering every image."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.common.train.test_distill import OVERRIDES, log_records, one_thread, smoke  # noqa: F401  (one_thread: autouse)

CODECS = ("t-deepsc", "rtsc")
FAST = {**OVERRIDES, "baseline.epochs": 2, "baseline.lr": 2e-3, "baseline.lr_min": 5e-4}
SENT = {"t-deepsc": 10, "rtsc": 512}  # real values per image (smoke configs keep the paper's counts)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from rkdsc.common.train.baselines import cli as baseline_cli
    from rkdsc.common.train.export import cli as export_cli

    wd = tmp_path_factory.mktemp("codec-baselines")
    sets = [f"--set={k}={json.dumps(v)}" for k, v in FAST.items()]
    for kind in CODECS:
        assert baseline_cli([kind, "--preset", "smoke", "--workdir", str(wd), "--device", "cpu", *sets]) == 0
        assert export_cli(["--workdir", str(wd), "--method", kind, "--out", str(wd / "bundles" / kind)]) == 0
    return wd


@pytest.mark.parametrize("kind", CODECS)
def test_trains_every_parameter_through_the_channel(trained, kind):
    from safetensors.torch import load_file

    from rkdsc.common.models.registry import get_method
    from rkdsc.common.train.baselines import codec_spec
    from rkdsc.common.train.common import seed_everything

    d = trained / f"baseline-{kind}" / "digits"
    spec = json.loads((d / "model.json").read_text())
    assert spec["method"] == kind and spec["compression_ratio"] == 0.0
    assert spec["compact_dim"] == spec["feature_dim"] == SENT[kind]
    assert spec["snr_train_db"] == ([12.0, 12.0] if kind == "t-deepsc" else [5.0, 20.0])  # T-DeepSC: fixed 12 dB
    assert set(spec["params"]) == {"encoder", "decoder"}
    p = smoke(**FAST)
    seed_everything(p.seed)
    init = get_method(kind).build(codec_spec(p, kind, 10)).state_dict()  # the same seeded initialisation
    trained_w = load_file(str(d / "model.safetensors"))
    for name in ("encoder.to_channel.weight", "decoder.from_channel.weight"):
        assert not torch.equal(trained_w[name], init[name])  # both halves trained
    recs = log_records(d / "log.jsonl")
    assert [r["epoch"] for r in recs] == [1, 2]
    assert all(np.isfinite(r["loss_task"]) and 0.0 <= r["val_acc_awgn_20db"] <= 1.0 for r in recs)


def test_tdeepsc_training_snr_is_the_preset_field():
    from rkdsc.common.train.baselines import train_snr_range

    assert train_snr_range(smoke(), "t-deepsc") == [12.0, 12.0]
    assert train_snr_range(smoke(**{"baseline.tdeepsc_snr_db": 3.0}), "t-deepsc") == [3.0, 3.0]
    assert train_snr_range(smoke(), "rtsc") == [5.0, 20.0]


@pytest.mark.parametrize("kind", CODECS)
def test_bundle_verifies_and_deploys_the_trained_modules(trained, kind, capsys):
    from rkdsc.common.bundle.cli import cli as bundle_cli
    from rkdsc.common.bundle.runtime import EdgeModel, ServerModel, load_bundle
    from rkdsc.common.data.datasets import heldout_dataset
    from rkdsc.common.models.registry import get_method

    b = trained / "bundles" / kind
    assert bundle_cli(["verify", str(b)]) == 0 and "OK" in capsys.readouterr().out
    bundle = load_bundle(b)
    task = bundle.task("digits")
    assert (task.compact_dim, task.symbols_per_image) == (SENT[kind], (SENT[kind] + 1) // 2)
    assert bundle.manifest["provenance"]["method"] == kind
    system, _ = get_method(kind).load(trained / f"baseline-{kind}" / "digits")
    edge, server = get_method(kind).parts(system)
    x = torch.stack([heldout_dataset(smoke(**FAST))[i][0] for i in range(6)])
    snr = torch.full((6,), 10.0)
    with torch.no_grad():
        sym, logits = edge(x, snr), server(edge(x, snr), snr)
    got = EdgeModel(bundle, "digits").encode(x.numpy(), snr.numpy())
    np.testing.assert_allclose(got, sym.numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(ServerModel(bundle, "digits").decode(sym.numpy(), snr.numpy()), logits.numpy(),
                               atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", CODECS)
def test_bundle_serves_over_localhost_grpc(trained, kind, tmp_path, monkeypatch):
    from rkdsc.common.data.samples import write_samples
    from rkdsc.common.experiments.demo import run_demo
    from tests.conftest import write_toml

    monkeypatch.chdir(tmp_path)
    samples = tmp_path / "samples"
    write_samples(samples, count=10, size=32)
    config = write_toml(tmp_path / "topology.toml", {}, {"bundle": {"path": str(trained / "bundles" / kind)},
                                                         "server": {"max_wait_ms": 1.0}}, [
        {"id": "near", "task": "digits", "snr_db": 20.0, "fading": "awgn", "seed": 1, "batch_size": 4,
         "images": str(samples)},
        {"id": "far", "task": "digits", "snr_db": -5.0, "fading": "rayleigh", "seed": 2, "batch_size": 4,
         "images": str(samples)},
    ])
    summary = json.loads(json.dumps(run_demo(config, tmp_path / "demo", quiet=True)))
    assert summary["ok"] is True
    for r in summary["transmitters"]:
        assert (r["images"], r["answered"], r["errors"]) == (10, 10, 0), r
        assert r["symbols_per_image"] == (SENT[kind] + 1) // 2
