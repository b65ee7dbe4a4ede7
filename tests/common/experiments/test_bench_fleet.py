"""`rkdsc bench --fleet`: fleets of emulated devices in one process through one relay and two
server replicas (real processes on localhost ports), every image answered, the frames spread
over both replicas, memory per device reported and plotted."""
from __future__ import annotations

import json

from rkdsc.common.experiments import bench
from rkdsc.common.experiments.bench_fleet import fleet_table, run_fleet_bench


def test_fleet_rows_answer_every_image_over_two_replicas(bundle_dir, sample_dir, tmp_path):
    out = tmp_path / "fleet.json"
    doc = run_fleet_bench((1, 6), bundle=str(bundle_dir), images=4, data=str(sample_dir), replicas=2,
                          concurrency=6, work_dir=str(tmp_path / "work"), out=str(out), log=lambda s: None)
    assert json.loads(out.read_text()) == doc and out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    one, six = doc["rows"]
    for row, n in ((one, 1), (six, 6)):
        assert row["devices"] == n and row["exit_status"] == 0
        assert row["images"] == row["answered"] == 4 * n and row["errors"] == 0
        assert row["fleet_rss_peak_mb"] > 30 and row["relay_rss_peak_mb"] > 20
        assert len(row["server_rss_peak_mb"]) == 2 and all(v > 50 for v in row["server_rss_peak_mb"])
        assert sum(row["frames_per_replica"]) == 4 * n  # every frame decoded by one of the replicas
    # six streams, round_robin per new upstream stream: both replicas took devices
    assert min(six["frames_per_replica"]) >= 4
    # one process for six devices: far less than six single-device processes
    assert six["fleet_rss_peak_mb"] < 2 * one["fleet_rss_peak_mb"]
    assert six["fleet_rss_marginal_per_device_mb"] < 0.25 * one["fleet_rss_peak_mb"]
    table = fleet_table(doc)
    assert table.count("\n") == 3 and "| 6 | 24 | 24 | 0 |" in table


def test_fleet_mode_refuses_bad_counts(capsys):
    import pytest

    with pytest.raises(SystemExit) as e:  # argparse: a count < 1
        bench.cli(["--fleet", "0,4"])
    assert e.value.code == 2 and "--fleet" in capsys.readouterr().err
    assert bench.cli(["--fleet", "2", "--replicas", "0"]) == 2
    assert "--replicas" in capsys.readouterr().err
