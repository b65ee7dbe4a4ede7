"""`rkdsc profile` rows of the T-DeepSC / RTSC baselines (asked for by name or with --methods all)."""
from __future__ import annotations

import json

from rkdsc.common.experiments import profile as prof


def test_cli_profiles_the_codec_baselines(tmp_path):
    out = tmp_path / "p.json"
    rc = prof.cli(["--preset", "smoke", "--methods", "t-deepsc,rtsc", "--no-ort", "--batches", "1", "--repeats", "3",
                   "--budget-s", "0.05", "--warmup", "1", "--interleave-rounds", "2", "--out", str(out), "--quiet"])
    assert rc == 0
    rows = {r["method"]: r for r in json.loads(out.read_text())["rows"]}
    assert list(rows) == ["t-deepsc", "rtsc"]
    for m, sent in (("t-deepsc", 10), ("rtsc", 512)):
        r = rows[m]
        assert (r["feature_dim"], r["symbols_per_image"]) == (sent, (sent + 1) // 2)
        assert r["depths"] is None and r["params"]["encoder"] > 0 and r["gflops"] > 0 and r["cpu_ms"] > 0


def test_all_means_every_registry_method():
    from rkdsc.common.models.registry import method_names

    assert "all" not in method_names() and set(prof.DEFAULT_METHODS) < set(method_names())
    assert prof.build_parser().parse_args([]).methods == ",".join(prof.DEFAULT_METHODS)
