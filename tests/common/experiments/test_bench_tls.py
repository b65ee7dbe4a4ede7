"""rkdsc.common.experiments.bench_tls: plaintext and mutual TLS measured side by side over real
services (subprocesses on localhost) in one run."""
from __future__ import annotations

import pytest

from rkdsc.common.experiments.bench_tls import tls_cost, tls_markdown


def test_tls_cost_measures_both_modes_over_real_services(bundle_dir, tmp_path):
    doc = tls_cost(bundle_dir, frames=40, unloaded=20, rounds=1, window=8, work=tmp_path)
    assert (doc["mode"], doc["frames"], doc["unloaded_calls"], doc["rounds"]) == ("mtls", 40, 20, 1)
    for label in ("plaintext", "mtls"):
        r = doc[label]
        assert r["frames_per_s"] > 0 and 0 < r["p50_ms"] <= r["p99_ms"] and r["connect_ms"] > 0
        assert len(r["per_round"]) == 1
    assert doc["throughput_ratio"] == pytest.approx(doc["mtls"]["frames_per_s"] / doc["plaintext"]["frames_per_s"])
    assert doc["p99_ratio"] == pytest.approx(doc["mtls"]["p99_ms"] / doc["plaintext"]["p99_ms"])
    # the two runs really differed in their transport
    assert "mutual TLS" in (tmp_path / "round0-mtls" / "relay.log").read_text()
    assert "plaintext gRPC" in (tmp_path / "round0-plaintext" / "relay.log").read_text()
    assert "mutual TLS" in (tmp_path / "round0-mtls" / "server.log").read_text()
    table = tls_markdown(doc)
    assert "| plaintext |" in table and "| mtls |" in table and "ratio mtls / plaintext" in table


def test_tls_cost_refuses_an_unknown_mode(bundle_dir):
    with pytest.raises(ValueError, match="mode: expected tls or mtls, got 'ssl'"):
        tls_cost(bundle_dir, mode="ssl")
