"""Distillation under torchrun: two CPU processes (gloo), both stages; both ranks run, each
reads half of the data, the replicas stay bit-identical, and only rank 0 writes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.common.train.test_distill import OVERRIDES, log_records, workdir_with_teacher

REPO = Path(__file__).resolve().parents[2]


def test_distill_two_processes_stay_in_sync(tmp_path_factory):
    wd = workdir_with_teacher(tmp_path_factory, "ddp")
    sets = {**OVERRIDES, "stage1.epochs": 2, "stage2.epochs": 1}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "rkdsc.common.train.distill", "--preset", "smoke", "--workdir", str(wd), "--stage", "both",
           "--device", "cpu"] + [f"--set={k}={json.dumps(v)}" for k, v in sets.items()]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RKDSC_PROGRESS": "0"}
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=420)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert "rank 0/2 on cpu (gloo)" in out and "rank 1/2 on cpu (gloo)" in out

    s1 = json.loads((wd / "stage1" / "stage1.json").read_text())
    assert s1["ddp"]["world_size"] == 2
    sums = s1["ddp"]["rank_weight_sha256"]
    assert len(sums) == 2 and sums[0] == sums[1] and s1["ddp"]["in_sync"]
    assert s1["ddp"]["samples_per_rank_last_epoch"] == [240, 240]  # 480 training images, sharded
    recs = log_records(wd / "stage1" / "log.jsonl")
    assert [r["epoch"] for r in recs] == [0, 1, 2]  # rank 0 alone logs
    assert recs[2]["train_mse"] < recs[1]["train_mse"]  # the all-reduced training loss falls

    s2 = json.loads((wd / "stage2" / "stage2.json").read_text())
    t = s2["tasks"][0]
    assert t["ddp"]["in_sync"] and len(set(t["ddp"]["rank_weight_sha256"])) == 1
    assert [r["epoch"] for r in log_records(wd / "stage2" / "log.jsonl")] == [1]
    assert (wd / "stage2" / "digits" / "model.safetensors").is_file()
