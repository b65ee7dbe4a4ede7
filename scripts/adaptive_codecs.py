#!/usr/bin/env python
"""Train the codecs of docs/adaptive-rate.md: the `default` preset (digits) shortened (teacher 20
epochs, fixed depths [1, 1, 1, 1], stage 1 12 epochs), then stage 2 from that one stage-1 student
at compression ratios 0.95, 0.8 and 0.5 (8 epochs each), each exported as a one-task bundle
runs/adaptive/digits-cr-<r>/bundle. About 10 minutes on 2 idle CPU cores. Then:

    rkdsc adaptive build --task digits --codec cr-0.95=runs/adaptive/digits-cr-0.95/bundle \
        --codec cr-0.8=runs/adaptive/digits-cr-0.8/bundle --codec cr-0.5=runs/adaptive/digits-cr-0.5/bundle \
        --default cr-0.8 --preset default --margin 0.02 --snr -10:25:2.5 --out runs/adaptive/bundle
    rkdsc adaptive eval --bundle runs/adaptive/bundle --preset default --channel awgn --snr -10:25:2.5 \
        --out docs/figures/adaptive-rate-awgn.json --plot docs/figures/adaptive-rate-awgn.png
"""
import os, time
from pathlib import Path
from rkdsc.common.train.common import set_threads
set_threads()
from rkdsc.common.train.distill import make_tasks, run_stage1, run_stage2
from rkdsc.common.train.export import export_from_workdir
from rkdsc.common.train.presets import load_preset, with_overrides
from rkdsc.common.train.teacher import get_teacher
t0 = time.time()
log = lambda m: print(f"[{time.time()-t0:7.1f}s] {m}", flush=True)
SETS = {"teacher.train_epochs": 20, "search.depths": [1, 1, 1, 1], "stage1.epochs": 12}
preset = load_preset("default", SETS)
workdir = Path("runs/rate-digits")
teacher = get_teacher(preset, workdir, log=log)
task = make_tasks([preset], workdir)[0]
run_stage1(preset, workdir, task=task, teacher=teacher, resume=True, log=log)
for r in (0.95, 0.8, 0.5):
    tag = f"cr-{r:g}"
    p = with_overrides(preset, {"cat": {"compression_ratio": r}})
    run_stage2(p, workdir, teachers=[teacher], resume=True, out_name=f"codecs/{tag}", epochs=8, log=log)
    shim = Path(f"runs/adaptive/digits-{tag}")
    shim.mkdir(parents=True, exist_ok=True)
    if not (shim / "stage2").exists():
        os.symlink((workdir / "codecs" / tag).resolve(), shim / "stage2")
    export_from_workdir(shim, f"runs/adaptive/digits-{tag}/bundle", "rkd-sc", provenance={
        "preset": "default", "seed": preset.seed,
        "command": f"scripts/adaptive_codecs.py: preset default with {SETS}, stage 2 at compression ratio {r}, 8 epochs"})
    log(f"exported runs/adaptive/digits-{tag}/bundle")
log("done")
