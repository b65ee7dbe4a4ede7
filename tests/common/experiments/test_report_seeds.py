"""`rkdsc report` over several seeds of one preset: each claim once, judged on the mean, with its
spread and per-seed verdicts; a per-seed table of depths and headline accuracies (issue 17)."""
from __future__ import annotations

import json
import math
import shutil

import pytest

from rkdsc.common.experiments import report
from tests.common.experiments.test_report import _method, make_runs

RKD_25DB = {0: 0.90, 1: 0.86, 2: 0.92}  # JSCC-student is at 0.88: +2.27 %, -2.27 %, +4.55 %


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """(summary, markdown path) of a report over three seeds of one preset. The figures and the
    recipe's FLOP estimate (tested in test_report.py) are skipped here: they cost most of the time."""
    import matplotlib.figure

    mp = pytest.MonkeyPatch()
    mp.setattr(matplotlib.figure.Figure, "savefig", lambda self, *a, **k: None)
    mp.setattr(report, "recipe_section", lambda: "")
    tmp = tmp_path_factory.mktemp("report-seeds")
    c10 = make_runs(tmp)[0]
    dirs = []
    for seed, a in RKD_25DB.items():
        d = tmp / "runs" / f"cifar10-cpu-seed{seed}"
        shutil.copytree(c10, d, ignore=shutil.ignore_patterns("ablation", "profile.json"))  # fewer figures: faster
        res = json.loads((d / "results.json").read_text())
        res["seed"] = seed
        res["methods"]["rkd-sc"] = _method(1_000_000, 102, [0.30, 0.70, a], [0.25, 0.60, 0.85])
        (d / "results.json").write_text(json.dumps(res))
        dirs.append(str(d))
    out = tmp / "docs" / "reproduction.md"
    try:
        yield report.generate(dirs, out), out
    finally:
        mp.undo()


def test_claims_are_judged_once_on_the_mean(seeded):
    summary, _ = seeded
    claims = [c for c in summary["claims"] if c["id"] == "gain_over_student_25db"]
    assert len(claims) == 1  # not once per seed
    c = claims[0]
    gains = [100.0 * (a - 0.88) / 0.88 for a in RKD_25DB.values()]
    mean = sum(gains) / 3
    assert c["source"] == "cifar10-cpu (seeds 0, 1, 2)"
    assert math.isclose(c["measured"], mean, rel_tol=1e-9)
    sp = c["spread"]
    assert sp["n"] == 3 and math.isclose(sp["std"], math.sqrt(sum((g - mean) ** 2 for g in gains) / 2))
    assert math.isclose(sp["min"], min(gains)) and math.isclose(sp["max"], max(gains))
    # per seed the verdicts differ; on the mean (1.52 % < the paper's 3.41 %, but positive) it is one verdict
    assert sp["verdicts"] == {0: "holds qualitatively", 1: "does not hold", 2: "holds"}
    assert c["verdict"] == "holds qualitatively"
    assert sum(summary["verdict_counts"].values()) == len(summary["claims"])


def test_markdown_has_the_seed_table_and_the_spread(seeded):
    _, out = seeded
    text = out.read_text()
    assert "## Preset `cifar10-cpu` over 3 seeds" in text
    assert "| Seed | KDL-DARTS depths | DARTS depths |" in text
    assert "| 1 | [3, 4, 4, 1] | [5, 2, 5, 2] |" in text
    run = report.collect_run(tmp_dir_of(out) / "runs" / "cifar10-cpu-seed0")
    kdl, darts = (run["archs"][m]["selected_params"] for m in ("kdl-darts", "darts"))  # the same in every seed
    # the mean row: the searches' parameters (mean ± std), then RKD-SC at 25 dB over the seeds
    assert f"| mean ± std | | | {kdl:,.0f} ± 0 | {darts:,.0f} ± 0 | 89.33 ± 3.06 |" in text
    assert "(mean of 3 seeds," in text


def tmp_dir_of(out):
    return out.parent.parent  # TMP/docs/reproduction.md -> TMP


def test_a_method_of_one_seed_has_no_spread(seeded):
    _, out = seeded
    group = [report.collect_run(tmp_dir_of(out) / "runs" / f"cifar10-cpu-seed{s}") for s in RKD_25DB]
    for r in group[1:]:
        r["curves"].pop("t-deepsc", None)  # T-DeepSC measured in seed 0 only
    group[0]["curves"]["t-deepsc"] = {"awgn": {25.0: 0.25, -10.0: 0.1}}
    mean_row = report.seeds_table(group).splitlines()[-1]
    assert mean_row.endswith("| 25.00 (1 seed) | 10.00 (1 seed) |")  # one value: no ± 0.00


def test_one_seed_is_not_a_group(tmp_path):
    c10 = make_runs(tmp_path)[0]
    run = report.collect_run(c10)
    assert report.seed_groups([run]) == {}
    other = report.collect_run(make_runs(tmp_path / "b")[0])  # the same preset and seed again
    assert report.seed_groups([run, other]) == {}


def test_a_claim_only_one_seed_measured_names_that_seed(seeded):
    _, out = seeded
    group = [report.collect_run(tmp_dir_of(out) / "runs" / f"cifar10-cpu-seed{s}") for s in RKD_25DB]
    for r in group[1:]:
        r["curves"]["rkd-sc"].pop("awgn")  # seeds 1 and 2 without the AWGN curve
    c = next(c for c in report.mean_claims(group) if c["id"] == "gain_over_student_25db")
    assert c["source"] == "cifar10-cpu (seed 0)" and c["spread"]["n"] == 1 and c["spread"]["std"] is None
