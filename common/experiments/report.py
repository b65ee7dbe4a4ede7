"""``rkdsc report``: regenerate ``docs/reproduction.md`` (+ ``docs/figures/``) from training runs.

    rkdsc report --runs runs/cifar10-cpu runs/tinyimagenet-cpu --out docs/reproduction.md
    rkdsc report --runs runs/cifar10-cpu --profile runs/profile.json --ablation runs/c10/ablation/ablation.json
    rkdsc report search --workdir runs/cifar10-cpu --out-dir docs/figures     # Fig. 7 + Table III only

Inputs per run directory (a ``rkdsc train`` work dir); anything missing becomes a "not run" row:

* ``results.json`` (pipeline summary: teacher, methods with accuracy-vs-SNR curves and params)
  or, without it, ``eval/<method>-<channel>.json`` (``rkdsc evaluate`` output);
* ``search-kdl-darts/arch.json``, ``search-darts/arch.json`` -> Fig. 7 and Table III
  (``rkdsc.common.experiments.analysis``);
* ``profile.json`` (``rkdsc profile --workdir RUN --out RUN/profile.json``) -> Table II, plus any
  ``--profile FILE``;
* ``ablation/ablation.json`` (``rkdsc ablation --workdir RUN``) -> Fig. 8, plus any ``--ablation FILE``.

``--keep-inputs DIR`` copies those files of each run (small JSON documents, the run dir's own
layout: ``snapshot_run``) to ``DIR/<run name>/``; such a copy is a run dir to the report, so the
report can be regenerated, or a later run added to it, after the training work dirs are gone
(``rkdsc report --runs docs/runs/cifar10-cpu runs/tinyimagenet-cpu``).

Every claim of the paper that the inputs allow is recomputed and judged by a rule stated next
to it (``judge``): "holds" (the paper's number is reached), "holds qualitatively" (same sign /
direction, smaller effect), "does not hold", "not measured" (the run exists but lacks the
method or SNR point the claim needs: T-DeepSC in a run made before ``rkdsc train`` trained it, or
left out by ``--baselines``) or "not run" (input missing). The paper's numbers live in ``PAPER``
below, copied from the paper's text and tables.

T-DeepSC and RTSC (``OPTIONAL_METHODS``) get accuracy / parameter rows only in runs that have them,
so the report of an older run renders as before apart from the claims that need them.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Iterable

from rkdsc.common.experiments.bench_format import DEFAULT_ROUNDS
from rkdsc.common.cliargs import str_list
from rkdsc.common.experiments.profile import PAPER_CPU_GFLOPS, PAPER_TABLE_II, PI_GFLOPS, ProfileOptions

# ----------------------------------------------------------------------------- the paper's numbers

DATASET_NAMES = {"cifar10": "CIFAR10", "cifar100": "CIFAR100", "tinyimagenet": "ImageNet (Tiny-ImageNet)",
                 "digits": "digits (not in the paper)"}
TABLE_II_KEY = {"cifar10": "CIFAR10", "cifar100": "CIFAR100", "tinyimagenet": "ImageNet"}

PAPER: dict[str, Any] = {
    # Sec. IV.B.1, AWGN at 25 dB: RKD-SC accuracy / JSCC-teacher accuracy, in %
    "teacher_retention_25db_pct": {"cifar10": 95.86, "cifar100": 90.20, "tinyimagenet": 78.39},
    # same sentence: parameter reduction of RKD-SC against the teacher, in %
    "param_reduction_vs_teacher_pct": {"cifar10": 94.06, "cifar100": 93.27, "tinyimagenet": 93.26},
    # "RKD-SC outperforms the JSCC-student model by over ..." (25 dB, AWGN), relative %
    "gain_over_student_25db_pct": {"cifar10": 3.41, "cifar100": 5.10, "tinyimagenet": 12.25},
    # "at an SNR of -10 dB, RKD-SC achieves performance gains exceeding ... compared to the JSCC-teacher"
    "gain_over_teacher_m10db_pct": {"cifar10": 83.12, "cifar100": 516.16, "tinyimagenet": 107.51},
    # Sec. IV.B.1: "at an SNR of 0 dB under AWGN channels, JSCC-student achieves higher top-1 accuracy than
    # T-DeepSC trained at an SNR of 12 dB by margins of 9.35%, 11.53%, and 16.72%" (relative %, read like
    # the section's other "by X%" margins)
    "student_gain_over_tdeepsc_0db_pct": {"cifar10": 9.35, "cifar100": 11.53, "tinyimagenet": 16.72},
    # same sentence: "while significantly reducing the parameter count by approximately 81.91%, 74.04%, and
    # 73.93%" (JSCC-student against T-DeepSC; Table II: 1 - 1.61 / 8.90 = 81.91%)
    "student_param_reduction_vs_tdeepsc_pct": {"cifar10": 81.91, "cifar100": 74.04, "tinyimagenet": 73.93},
    "tdeepsc_train_snr_db": 12.0,  # the same sentence's T-DeepSC training SNR
    # Table II's feature-dim cells where the printed text is more than the number in PAPER_TABLE_II
    "table_ii_feature_dim_printed": {"t-deepsc": "10 (index of KB)"},
    # Sec. IV.B.3: KDL-DARTS vs DARTS accuracy ("over 5%, 12%, 13%"; read here as percentage points)
    "kdl_vs_darts_acc_pp": {"cifar10": 5.0, "cifar100": 12.0, "tinyimagenet": 13.0},
    # ... and parameter reduction of the selected architecture, in %
    "kdl_vs_darts_param_reduction_pct": {"cifar10": 29.4, "cifar100": 14.5, "tinyimagenet": 27.9},
    # Sec. IV.A: CAT compression ratio per data set, and the transmitted dimension (Table II)
    "compression_ratio": {"cifar10": 0.8, "cifar100": 0.2, "tinyimagenet": 0.1},
    "feature_dim": {"cifar10": 102, "cifar100": 409, "tinyimagenet": 460},
    # Fig. 8 (text): accuracy at -10 dB, lowest -> highest compression ratio, in %
    "fig8_endpoints_pct": {"cifar10": (11.73, 63.80), "cifar100": (47.32, 16.15), "tinyimagenet": (12.76, 7.47)},
    "table_ii": PAPER_TABLE_II,
    # Table III as printed (M parameters): L1, L2, L3, L4, total
    "table_iii": [
        {"dataset": "cifar10", "method": "darts", "layers_m": [0.227, 0.420, 0.377, 0.660], "total_m": 1.101},
        {"dataset": "cifar10", "method": "kdl-darts", "layers_m": [0.014, 0.078, 0.307, 0.379], "total_m": 0.777},
        {"dataset": "cifar100", "method": "darts", "layers_m": [0.018, 0.060, 0.377, 0.940], "total_m": 1.675},
        {"dataset": "cifar100", "method": "kdl-darts", "layers_m": [0.018, 0.095, 0.377, 1.220], "total_m": 1.430},
        {"dataset": "tinyimagenet", "method": "darts", "layers_m": [0.023, 0.095, 0.377, 1.500], "total_m": 1.990},
        {"dataset": "tinyimagenet", "method": "kdl-darts", "layers_m": [0.018, 0.095, 0.377, 0.940], "total_m": 1.435},
    ],
    # depths (blocks per layer) whose Table I block counts give the printed totals (inferred here)
    "table_iii_depths": {("cifar10", "darts"): [5, 2, 5, 2], ("cifar10", "kdl-darts"): [3, 4, 4, 1],
                         ("cifar100", "darts"): [4, 3, 5, 4], ("cifar100", "kdl-darts"): [4, 5, 5, 3],
                         ("tinyimagenet", "darts"): [5, 5, 5, 5], ("tinyimagenet", "kdl-darts"): [4, 5, 5, 3]},
    "cost": ("the paper states that KDL-DARTS costs the same as DARTS, 'within 1 GPU day on a single NVIDIA RTX "
             "4090' (its server: two RTX 4090s, an i9-14900KF); it gives no figure for the two RKD stages "
             "(300 + 100 epochs), which this project expects at about one more GPU-day on the same card."),
    "epochs": {"search": 200, "stage1": 300, "stage2": 100},
}

MARGINAL_OVERHEAD_PCT = 10.0  # "marginal increase in encoding delay": CAT overhead at most this (or the paper's)
VERDICTS = ("holds", "holds qualitatively", "does not hold", "not measured", "not run", "n/a")
METHOD_LABELS = {"rkd-sc": "RKD-SC", "jscc-student": "JSCC-student", "jscc-teacher": "JSCC-teacher",
                 "t-deepsc": "T-DeepSC", "rtsc": "RTSC"}
# methods whose table rows appear only when a run has them (runs made before `rkdsc train` trained them)
OPTIONAL_METHODS = ("t-deepsc", "rtsc")
CHANNELS = ("awgn", "rayleigh")


def judge(measured: float | None, paper: float | None, qualitative: bool | None = None,
          higher_is_better: bool = True) -> str:
    """The verdict of one claim.

    * ``measured`` None -> "not run";
    * the paper's number is reached (``measured >= paper``, or ``<=`` when lower is better) -> "holds";
    * otherwise, when the claim's qualitative form is true (``qualitative``) -> "holds qualitatively";
    * otherwise "does not hold". Without a paper number only the qualitative form decides
      ("holds qualitatively" / "does not hold"; "n/a" when there is none either).
    """
    if measured is None or (isinstance(measured, float) and math.isnan(measured)):
        return "not run"
    if paper is not None:
        if (measured >= paper) if higher_is_better else (measured <= paper):
            return "holds"
    if qualitative is None:
        return "n/a" if paper is None else "does not hold"
    return "holds qualitatively" if qualitative else "does not hold"


# ----------------------------------------------------------------------------- reading runs

def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def _dataset_of(run_dir: Path, results: dict | None) -> str:
    for f in sorted((run_dir / "stage2").glob("*/model.json")):
        cfg = (_read_json(f) or {}).get("preset_config") or {}
        ds = (cfg.get("data") or {}).get("dataset")
        if ds:
            return str(ds)
    name = (results or {}).get("preset")
    if isinstance(name, str) and name:
        try:
            from rkdsc.common.train.presets import load_preset

            return load_preset(name).data.dataset
        except Exception:  # noqa: BLE001 - an unknown or custom preset: guess from the names below
            pass
    text = f"{name or ''} {run_dir.name}".lower()
    for key in ("cifar100", "cifar10", "tinyimagenet", "tiny-imagenet", "imagenet", "digits"):
        if key in text:
            return {"tiny-imagenet": "tinyimagenet", "imagenet": "tinyimagenet"}.get(key, key)
    return "unknown"


def _points_to_map(points: list[dict]) -> dict[float, float]:
    return {float(p["snr_db"]): float(p["accuracy"]) for p in points or [] if p.get("accuracy") is not None}


def _points_n(points: list[dict]) -> dict[float, int]:
    """Images evaluated per SNR point (the Wilson intervals of the Fig. 6 plot need them)."""
    return {float(p["snr_db"]): int(p["n"]) for p in points or [] if p.get("n")}


# the files of a run dir the report reads (relative glob patterns): what ``snapshot_run`` keeps
REPORT_INPUTS = ("results.json", "eval/*.json", "stage2/*/model.json", "search-*/arch.json", "profile.json",
                 "ablation/ablation.json", "bundles/*/manifest.json")
SNAPSHOT_MAX_BYTES = 8 << 20  # a report input larger than this is not a summary: refuse to copy it


def _refuse_large(files: Iterable[Path]) -> None:
    """ValueError naming the first file above ``SNAPSHOT_MAX_BYTES``: not a report summary."""
    for f in files:
        if f.stat().st_size > SNAPSHOT_MAX_BYTES:
            raise ValueError(f"--keep-inputs: {f} is {f.stat().st_size:,} bytes (more than {SNAPSHOT_MAX_BYTES:,}); "
                             "not a report summary")


def snapshot_run(run_dir: str | Path, dest: str | Path) -> list[Path]:
    """Copy the report's inputs of one run dir (``REPORT_INPUTS``) to ``dest``, keeping their
    relative paths; ``dest`` is then a run dir to ``collect_run``. Files already in ``dest`` that
    the run no longer has are removed, so the copy always mirrors one run. Returns the files copied.
    Raises ValueError naming a file above ``SNAPSHOT_MAX_BYTES`` (nothing is changed then)."""
    import shutil

    run_dir, dest = Path(run_dir), Path(dest)
    files = sorted({f for pat in REPORT_INPUTS for f in run_dir.glob(pat) if f.is_file()})
    _refuse_large(files)
    if dest.resolve() == run_dir.resolve():
        return files
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for f in files:
        target = tmp / f.relative_to(run_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, target)
    tmp.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return [dest / f.relative_to(run_dir) for f in files]


def snapshot_files(files: Iterable[str | Path], dest_root: str | Path) -> list[Path]:
    """Copy extra report inputs (``--profile`` / ``--ablation`` / ``--bench`` files) to
    ``dest_root/<parent folder>/<file name>`` (``runs/paper-scale/profile.json`` ->
    ``docs/runs/paper-scale/profile.json``), where a later report can be pointed at them.
    Raises ValueError naming a file above ``SNAPSHOT_MAX_BYTES`` (nothing is copied then)."""
    import shutil

    files = [Path(f) for f in files if Path(f).is_file()]
    _refuse_large(files)
    out = []
    for f in files:
        target = Path(dest_root) / f.resolve().parent.name / f.name
        if target.resolve() != f.resolve():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".tmp")
            shutil.copyfile(f, tmp)
            os.replace(tmp, target)
        out.append(target)
    return out


def collect_run(run_dir: str | Path) -> dict:
    """Everything the report needs from one run dir (missing pieces are None / empty)."""
    run_dir = Path(run_dir)
    results = _read_json(run_dir / "results.json") if (run_dir / "results.json").is_file() else None
    run: dict[str, Any] = {"dir": str(run_dir), "name": run_dir.name, "exists": run_dir.is_dir(),
                           "results": results, "dataset": _dataset_of(run_dir, results) if run_dir.is_dir() else "unknown",
                           "curves": {}, "curve_n": {}, "methods": {}, "archs": {}, "profile": None, "ablation": None}
    # accuracy-vs-SNR curves: results.json first, then eval/<method>-<channel>.json
    for m in METHOD_LABELS:
        mres = ((results or {}).get("methods") or {}).get(m)
        if mres:
            run["methods"][m] = mres
            for ch, pts in (mres.get("curves") or {}).items():
                run["curves"].setdefault(m, {})[ch] = _points_to_map(pts)
                run["curve_n"].setdefault(m, {})[ch] = _points_n(pts)
        for ch in CHANNELS:
            if ch in run["curves"].get(m, {}):
                continue
            ev = _read_json(run_dir / "eval" / f"{m}-{ch}.json")
            if ev and ev.get("points"):
                run["curves"].setdefault(m, {})[ch] = _points_to_map(ev["points"])
                run["curve_n"].setdefault(m, {})[ch] = _points_n(ev["points"])
    from rkdsc.common.experiments import analysis

    for method, path in analysis.find_archs(run_dir).items():
        try:
            run["archs"][method] = analysis.load_arch(path)
        except analysis.ArchError as exc:
            run.setdefault("problems", []).append(str(exc))
    prof = run_dir / "profile.json"
    if prof.is_file():
        run["profile"] = _read_json(prof)
    abl = run_dir / "ablation" / "ablation.json"
    if abl.is_file():
        run["ablation"] = _read_json(abl)
    return run


def acc(run: dict, method: str, channel: str, snr_db: float) -> float | None:
    """Accuracy (fraction) of a method at one SNR, or None."""
    return run["curves"].get(method, {}).get(channel, {}).get(float(snr_db))


def edge_params(run: dict, method: str) -> int | None:
    m = run["methods"].get(method) or {}
    v = m.get("edge_params")
    if v is None:
        bundle = Path(run["dir"]) / "bundles" / method / "manifest.json"
        man = _read_json(bundle) if bundle.is_file() else None
        if man:
            t = man["tasks"][0]
            v = man["components"][t["edge"]].get("params")
    return int(v) if v is not None else None


# ----------------------------------------------------------------------------- claims

def _claim(cid: str, text: str, dataset: str, paper: Any, measured: Any, unit: str, verdict: str,
           rule: str, source: str) -> dict:
    return {"id": cid, "claim": text, "dataset": dataset, "paper": paper, "measured": measured, "unit": unit,
            "verdict": verdict, "rule": rule, "source": source}


def _rel_gain(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return 100.0 * (a - b) / b


def run_claims(run: dict) -> list[dict]:
    """Fig. 6 / KDL-DARTS / Fig. 8 claims for one run (Table II claims: ``profile_claims``)."""
    ds, name = run["dataset"], run["name"]
    P = PAPER
    out = []
    a_rkd25, a_tea25 = acc(run, "rkd-sc", "awgn", 25), acc(run, "jscc-teacher", "awgn", 25)
    a_stu25 = acc(run, "jscc-student", "awgn", 25)
    a_rkd_m10, a_tea_m10 = acc(run, "rkd-sc", "awgn", -10), acc(run, "jscc-teacher", "awgn", -10)
    retention = 100.0 * a_rkd25 / a_tea25 if a_rkd25 is not None and a_tea25 else None
    p = P["teacher_retention_25db_pct"].get(ds)
    out.append(_claim("teacher_retention_25db", "RKD-SC keeps this share of JSCC-teacher's accuracy (AWGN, 25 dB)",
                      ds, p, retention, "%", judge(retention, p), "holds if >= the paper's share", name))
    e_rkd, e_tea = edge_params(run, "rkd-sc"), edge_params(run, "jscc-teacher")
    red = 100.0 * (1 - e_rkd / e_tea) if e_rkd and e_tea else None
    p = P["param_reduction_vs_teacher_pct"].get(ds)
    out.append(_claim("param_reduction_vs_teacher", "RKD-SC's edge encoder (student + CAT) has this many % fewer "
                      "parameters than JSCC-teacher's", ds, p, red, "%",
                      judge(red, p, None if red is None else red > 0),
                      "holds if >= the paper's reduction; qualitatively if fewer parameters at all", name))
    g = _rel_gain(a_rkd25, a_stu25)
    p = P["gain_over_student_25db_pct"].get(ds)
    out.append(_claim("gain_over_student_25db", "RKD-SC beats JSCC-student at 25 dB (AWGN) by this relative margin",
                      ds, p, g, "%", judge(g, p, None if g is None else g > 0),
                      "holds if >= the paper's margin; qualitatively if RKD-SC is more accurate at all", name))
    g = _rel_gain(a_rkd_m10, a_tea_m10)
    p = P["gain_over_teacher_m10db_pct"].get(ds)
    out.append(_claim("gain_over_teacher_m10db", "RKD-SC beats JSCC-teacher at -10 dB (AWGN) by this relative margin",
                      ds, p, g, "%", judge(g, p, None if g is None else g > 0),
                      "holds if >= the paper's margin; qualitatively if RKD-SC is more accurate at all", name))
    out += tdeepsc_claims(run)
    # KDL-DARTS vs DARTS
    from rkdsc.common.experiments import analysis

    cmp = None
    if "kdl-darts" in run["archs"] and "darts" in run["archs"]:
        cmp = analysis.table_iii({m: run["archs"][m] for m in ("kdl-darts", "darts")}, ds)["comparison"]
    d_acc = cmp["final_val_acc_gain_pp"] if cmp else None
    p = P["kdl_vs_darts_acc_pp"].get(ds)
    out.append(_claim("kdl_vs_darts_accuracy", "KDL-DARTS's search ends more accurate than DARTS's (percentage points, "
                      "final validation accuracy of the supernet)", ds, p, d_acc, "pp",
                      judge(d_acc, p, None if d_acc is None else d_acc > 0),
                      "holds if >= the paper's gain; qualitatively if KDL-DARTS is more accurate at all", name))
    d_par = cmp["param_reduction_pct"] if cmp else None
    p = P["kdl_vs_darts_param_reduction_pct"].get(ds)
    out.append(_claim("kdl_vs_darts_params", "KDL-DARTS selects an architecture with this many % fewer parameters "
                      "than DARTS (Table III totals)", ds, p, d_par, "%",
                      judge(d_par, p, None if d_par is None else d_par > 0),
                      "holds if >= the paper's reduction; qualitatively if smaller at all", name))
    # transmitted dimension
    cd = (run["methods"].get("rkd-sc") or {}).get("compact_dim")
    p = P["feature_dim"].get(ds)
    out.append(_claim("feature_dim", "RKD-SC transmits this many real values per image (Table II)", ds, p, cd, "",
                      "not run" if cd is None else ("holds" if p is not None and int(cd) == p else
                                                    ("n/a" if p is None else "does not hold")),
                      "holds if equal (floor(512 * (1 - ratio)) with the paper's ratio and feature size)", name))
    out.append(fig8_claim(run.get("ablation"), ds, name))
    return out


def tdeepsc_claims(run: dict) -> list[dict]:
    """Sec. IV.B.1: JSCC-student against T-DeepSC at 0 dB (AWGN), accuracy and parameters. A run that
    exists but has no T-DeepSC (or JSCC-student) measurement gives "not measured" rather than "not run"."""
    ds, name = run["dataset"], run["name"]
    lacks = "not measured" if run["exists"] else "not run"
    rec = (((run.get("results") or {}).get("preset_config") or {}).get("baseline") or {}).get("tdeepsc_snr_db")
    p_snr = PAPER["tdeepsc_train_snr_db"]
    trained = (f"trained at {p_snr:g} dB" if rec is None or float(rec) == p_snr
               else f"trained at {float(rec):g} dB, the paper's at {p_snr:g} dB")
    a_stu, a_td = acc(run, "jscc-student", "awgn", 0), acc(run, "t-deepsc", "awgn", 0)
    g = _rel_gain(a_stu, a_td)
    p = PAPER["student_gain_over_tdeepsc_0db_pct"].get(ds)
    out = [_claim("student_gain_over_tdeepsc_0db", f"JSCC-student beats T-DeepSC ({trained}) at 0 dB (AWGN) by this "
                  "relative margin", ds, p, g, "%",
                  lacks if a_stu is None or a_td is None else judge(g, p, None if g is None else g > 0),
                  "holds if >= the paper's margin; qualitatively if JSCC-student is more accurate at all", name)]
    e_stu, e_td = edge_params(run, "jscc-student"), edge_params(run, "t-deepsc")
    red = 100.0 * (1 - e_stu / e_td) if e_stu and e_td else None
    p = PAPER["student_param_reduction_vs_tdeepsc_pct"].get(ds)
    out.append(_claim("student_param_reduction_vs_tdeepsc", "JSCC-student's edge encoder has this many % fewer "
                      "parameters than T-DeepSC's", ds, p, red, "%",
                      lacks if red is None else judge(red, p, red > 0),
                      "holds if >= the paper's reduction; qualitatively if fewer parameters at all", name))
    return out


def fig8_claim(ablation: dict | None, ds: str, source: str) -> dict:
    """Direction (and size) of the accuracy change from the lowest to the highest compression ratio."""
    paper = PAPER["fig8_endpoints_pct"].get(ds)
    p_delta = None if paper is None else paper[1] - paper[0]
    delta = None
    if ablation and ablation.get("points"):
        pts = sorted(ablation["points"], key=lambda q: q["compression_ratio"])
        if len(pts) >= 2:
            delta = 100.0 * (pts[-1]["accuracy_at_snr"] - pts[0]["accuracy_at_snr"])
    verdict = _fig8_verdict(delta, p_delta)
    trend = "changes" if p_delta is None else ("rises" if p_delta > 0 else "falls")
    return _claim("fig8_trend", f"accuracy at -10 dB {trend} from the lowest to the highest compression ratio "
                  "(change in percentage points)", ds, p_delta, delta, "pp", verdict,
                  "holds if same sign and at least the paper's change; qualitatively if same sign", source)


def _fig8_verdict(delta: float | None, p_delta: float | None) -> str:
    if delta is None:
        return "not run"
    if p_delta is None:
        return "n/a"
    if delta * p_delta > 0:
        return "holds" if abs(delta) >= abs(p_delta) else "holds qualitatively"
    return "does not hold"


# claims of run_claims whose qualitative form is "the measured number is positive"
POSITIVE_QUALITATIVE = ("param_reduction_vs_teacher", "gain_over_student_25db", "gain_over_teacher_m10db",
                        "student_gain_over_tdeepsc_0db", "student_param_reduction_vs_tdeepsc",
                        "kdl_vs_darts_accuracy", "kdl_vs_darts_params")


def seed_groups(runs: list[dict]) -> dict[str, list[dict]]:
    """Runs of one preset with two or more different seeds (results.json ``preset`` / ``seed``), by preset."""
    by: dict[str, list[dict]] = {}
    for r in runs:
        res = r.get("results") or {}
        if res.get("preset") is not None and res.get("seed") is not None:
            by.setdefault(str(res["preset"]), []).append(r)
    return {k: v for k, v in by.items() if len({r["results"]["seed"] for r in v}) >= 2}


def _verdict_on_mean(cid: str, mean: float | None, paper: Any, first: dict) -> str:
    if mean is None:  # no seed measured it: "not measured" when the runs lack the method, else "not run"
        return "not measured" if first["verdict"] == "not measured" else "not run"
    if cid == "fig8_trend":
        return _fig8_verdict(mean, paper)
    if cid == "feature_dim":  # fixed by the preset: every seed transmits the same size
        return first["verdict"]
    return judge(mean, paper, (mean > 0) if cid in POSITIVE_QUALITATIVE else None)


def mean_claims(group: list[dict]) -> list[dict]:
    """The claims of ``run_claims`` over several seeds of one preset: ``measured`` is the mean over the
    seeds that measured it, ``spread`` the sample standard deviation, range and per-seed values (and
    verdicts), and the verdict is the claim's rule applied to the mean."""
    seeds = [r["results"]["seed"] for r in group]
    per_run = [{c["id"]: c for c in run_claims(r)} for r in group]
    preset = group[0]["results"]["preset"]
    out = []
    for cid, first in per_run[0].items():
        vals = {s: cl[cid]["measured"] for s, cl in zip(seeds, per_run) if cl[cid]["measured"] is not None}
        xs = [float(v) for v in vals.values()]
        mean = sum(xs) / len(xs) if xs else None
        std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) >= 2 else None
        which = list(vals) if vals else seeds  # the seeds behind the number (a method only one seed ran: that one)
        label = "seed" if len(which) == 1 else "seeds"
        c = dict(first, measured=mean, source=f"{preset} ({label} {', '.join(str(s) for s in which)})",
                 verdict=_verdict_on_mean(cid, mean, first["paper"], first))
        c["spread"] = {"n": len(xs), "std": std, "min": min(xs) if xs else None, "max": max(xs) if xs else None,
                       "values": vals, "verdicts": {s: cl[cid]["verdict"] for s, cl in zip(seeds, per_run)}}
        out.append(c)
    return out


def seeds_table(group: list[dict]) -> str:
    """Per-seed search results and headline accuracies (AWGN) of one preset, then mean +- std."""
    cols = [("rkd-sc", 25), ("rkd-sc", -10), ("jscc-student", 25), ("jscc-student", -10), ("jscc-teacher", 25),
            ("jscc-teacher", -10)]
    cols += [(m, s) for m in OPTIONAL_METHODS if any(m in r["curves"] for r in group) for s in (25, -10)]
    lines = ["| Seed | KDL-DARTS depths | DARTS depths | KDL-DARTS params | DARTS params | "
             + " | ".join(f"{METHOD_LABELS[m]} {s:g} dB" for m, s in cols) + " |",
             "|---|---|---|---|---|" + "---|" * len(cols)]
    accs: dict[tuple, list[float]] = {k: [] for k in cols}
    params: dict[str, list[float]] = {"kdl-darts": [], "darts": []}
    for r in group:
        archs = r["archs"]
        row = [str(r["results"]["seed"])]
        for m in ("kdl-darts", "darts"):
            row.append(str(archs[m].get("depths")) if m in archs else "not run")
        for m in ("kdl-darts", "darts"):
            v = archs[m].get("selected_params") if m in archs else None
            row.append(f"{v:,}" if isinstance(v, int) else "not run")
            if isinstance(v, int):
                params[m].append(float(v))
        for k in cols:
            a = acc(r, k[0], "awgn", k[1])
            row.append(_pct(a))
            if a is not None:
                accs[k].append(100.0 * a)
        lines.append("| " + " | ".join(row) + " |")

    def ms(xs: list[float], spec: str = ".2f") -> str:
        if not xs:
            return "not run"
        m = sum(xs) / len(xs)
        if len(xs) < 2:  # no spread from one value
            return f"{m:{spec}} (1 seed)"
        sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))
        return f"{m:{spec}} ± {sd:{spec}}"
    lines.append("| mean ± std | | | " + " | ".join(ms(params[m], ",.0f") for m in ("kdl-darts", "darts")) + " | "
                 + " | ".join(ms(accs[k]) for k in cols) + " |")
    return "\n".join(lines)


def profile_claims(doc: dict, other_teachers: list[dict] | None = None) -> list[dict]:
    """Table II claims for each source in a profile document. The teacher is dataset
    independent (paper): without a teacher row of its own, a document borrows one measured at
    the same input size in another profile document (``other_teachers``)."""
    rows = doc.get("rows") or []
    own_teacher = next((r for r in rows if r["method"] == "jscc-teacher" and r.get("cpu_ms")), None)
    out = []
    for src in dict.fromkeys(r["source"] for r in rows):
        by = {r["method"]: r for r in rows if r["source"] == src}
        if not {"rkd-sc", "jscc-student", "jscc-teacher"} & set(by):
            continue  # only T-DeepSC / RTSC rows (`rkdsc profile --methods t-deepsc,rtsc`): no claim to check
        rkd, stu = by.get("rkd-sc"), by.get("jscc-student")
        ds = (rkd or stu or {}).get("dataset") or ""
        key = TABLE_II_KEY.get(ds, "CIFAR10")
        paper_rkd = next(r for r in PAPER_TABLE_II if r["method"] == "rkd-sc" and r["dataset"] == key)
        paper_stu = next(r for r in PAPER_TABLE_II if r["method"] == "jscc-student" and r["dataset"] == key)
        paper_tea = next(r for r in PAPER_TABLE_II if r["method"] == "jscc-teacher")
        p_over = 100.0 * (paper_rkd["cpu_ms"] / paper_stu["cpu_ms"] - 1)
        over = (100.0 * (rkd["cpu_ms"] / stu["cpu_ms"] - 1)) if rkd and stu and rkd.get("cpu_ms") and stu.get("cpu_ms") else None
        limit = max(MARGINAL_OVERHEAD_PCT, p_over)
        out.append(_claim("cat_latency_overhead", "the CAT adds only a marginal CPU encode delay (RKD-SC vs "
                          f"JSCC-student, torch batch 1, % extra time; paper {key})", ds or key, round(p_over, 2),
                          over, "%", judge(over, limit, higher_is_better=False),
                          f"holds if <= {limit:.1f}% (the larger of {MARGINAL_OVERHEAD_PCT:g}% and the paper's overhead)",
                          src))
        p_slow = paper_tea["cpu_ms"] / paper_rkd["cpu_ms"]
        teacher, borrowed = own_teacher, False
        if teacher is None and rkd is not None:
            teacher = next((t for t in other_teachers or [] if t.get("input_size") == rkd.get("input_size")), None)
            borrowed = teacher is not None
        slow = teacher["cpu_ms"] / rkd["cpu_ms"] if teacher and rkd and rkd.get("cpu_ms") else None
        out.append(_claim("teacher_slowdown", "JSCC-teacher's encoder is this many times slower than RKD-SC's "
                          f"(CPU, batch 1; paper {key})", ds or key, round(p_slow, 2), slow, "x",
                          judge(slow, p_slow, None if slow is None else slow > 1),
                          "holds if >= the paper's ratio; qualitatively if slower at all"
                          + ("; teacher timed in another profile run at the same input size" if borrowed else ""), src))
    return out


# ----------------------------------------------------------------------------- Markdown

def _fmt(v: Any, nd: int = 2, unit: str = "") -> str:
    if v is None:
        return "not run"
    if isinstance(v, (tuple, list)):
        return " -> ".join(_fmt(x, nd, unit) for x in v)
    if isinstance(v, float):
        return f"{v:.{nd}f}{unit}"
    return f"{v}{unit}"


def _pct(v: float | None, nd: int = 2) -> str:
    return "not run" if v is None else f"{100.0 * v:.{nd}f}"


def claims_table(claims: list[dict]) -> str:
    lines = ["| Claim | Data set | Run | Paper | This run | Verdict | Rule |", "|---|---|---|---|---|---|---|"]
    for c in claims:
        u = c["unit"]
        measured = "not measured" if c["measured"] is None and c["verdict"] == "not measured" else _fmt(c["measured"], 2, u)
        sp = c.get("spread")
        if sp and sp.get("std") is not None:  # a mean over seeds (mean_claims)
            measured += f" ± {sp['std']:.2f} (mean of {sp['n']} seeds, {sp['min']:.2f} to {sp['max']:.2f})"
        lines.append(f"| {c['claim']} | {DATASET_NAMES.get(c['dataset'], c['dataset'])} | {c['source']} | "
                     f"{_fmt(c['paper'], 2, u) if c['paper'] is not None else 'n/a'} | {measured} | "
                     f"**{c['verdict']}** | {c['rule']} |")
    return "\n".join(lines)


def run_methods(run: dict) -> list[str]:
    """The methods of METHOD_LABELS that get rows for this run: all but OPTIONAL_METHODS, which only
    when the run has curves or a results.json entry for them."""
    return [m for m in METHOD_LABELS if m not in OPTIONAL_METHODS or m in run["curves"] or m in run["methods"]]


def accuracy_table(run: dict) -> str:
    snrs = sorted({s for m in run["curves"].values() for ch in m.values() for s in ch})
    if not snrs:
        return "_not run: no results.json curves or eval/*.json in this run._"
    lines = ["| Method | Channel | " + " | ".join(f"{s:g} dB" for s in snrs) + " |",
             "|---|---|" + "---|" * len(snrs)]
    for m in run_methods(run):
        for ch in CHANNELS:
            pts = run["curves"].get(m, {}).get(ch)
            if pts is None:
                lines.append(f"| {METHOD_LABELS[m]} | {ch} | " + " | ".join("not run" for _ in snrs) + " |")
            else:
                lines.append(f"| {METHOD_LABELS[m]} | {ch} | " + " | ".join(_pct(pts.get(s)) for s in snrs) + " |")
    return "\n".join(lines)


def params_table(run: dict) -> str:
    lines = ["| Method | edge (encoder) params | server params | symbols / image | compact dim |",
             "|---|---|---|---|---|"]
    for m in run_methods(run):
        r = run["methods"].get(m)
        if r is None:
            lines.append(f"| {METHOD_LABELS[m]} | not run | not run | not run | not run |")
        else:
            lines.append(f"| {METHOD_LABELS[m]} | {r.get('edge_params', 'n/a'):,} | {r.get('server_params', 'n/a'):,} | "
                         f"{r.get('symbols_per_image')} | {r.get('compact_dim')} |")
    return "\n".join(lines)


def baseline_table_ii(docs: list[dict]) -> str | None:
    """Measured Table II rows of T-DeepSC and RTSC (every profile document's rows of those methods)
    next to the paper's printed row; None when no document has one."""
    paper = {r["method"]: r for r in PAPER_TABLE_II if r["method"] in OPTIONAL_METHODS}
    printed = PAPER["table_ii_feature_dim_printed"]
    lines = ["| Method | Source | Input | Params (M) | paper | GFLOPs (2 / MAC) | GMACs | paper GFLOPs | "
             "CPU torch b1 (ms) | paper CPU (ms) | GPU (µs) | paper GPU (µs) | Feature dim | paper |",
             "|" + "---|" * 14]
    n = 0
    for doc in docs:
        b0 = ((doc.get("settings") or {}).get("batches") or [1])[0]
        for r in doc.get("rows") or []:
            m = r.get("method")
            if m not in paper:
                continue
            pr = paper[m]
            cpu = ((r.get("latency_ms") or {}).get(f"torch_cpu_b{b0}") or {}).get("per_image_ms", r.get("cpu_ms"))
            g = r.get("gflops")
            lines.append(f"| {METHOD_LABELS[m]} | {r.get('source')} | {r.get('input_size')} | "
                         f"{_fmt(r.get('params_m'), 3)} | {pr['params_m']:.2f} | {_fmt(g, 4)} | "
                         f"{_fmt(None if g is None else g / 2, 4)} | {pr['gflops']:.3f} | "
                         f"{_fmt(cpu, 3)}{'' if b0 == 1 else f' (b{b0})'} | {pr['cpu_ms']:.2f} | "
                         f"{_fmt(r.get('gpu_us'), 2)} | {pr['gpu_us']:.2f} | {r.get('feature_dim')} | "
                         f"{printed.get(m, pr['feature_dim'])} |")
            n += 1
    return "\n".join(lines) if n else None


def paper_table_iii_markdown() -> str:
    from rkdsc.common.models.student import SearchableStudent, StudentConfig

    cand = SearchableStudent(StudentConfig()).candidate_params()
    lines = ["| Data set | Method | L1 | L2 | L3 | L4 | Total (printed) | inferred depths | total of the inferred depths (this code) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in PAPER["table_iii"]:
        depths = PAPER["table_iii_depths"][(r["dataset"], r["method"])]
        tot = sum(cand[l][d - 1] for l, d in enumerate(depths)) / 1e6
        lines.append(f"| {DATASET_NAMES[r['dataset']]} | {r['method'].upper()} | "
                     + " | ".join(f"{v:.3f}" for v in r["layers_m"]) + f" | {r['total_m']:.3f} | {depths} | {tot:.3f} |")
    return "\n".join(lines)


def ablation_table(doc: dict) -> str:
    chans = doc.get("channels") or ["awgn"]
    lines = ["| compression ratio | compact dim | symbols / image | "
             + " | ".join(f"accuracy {c} @ {doc.get('snr_db', -10):g} dB (%)" for c in chans) + " |",
             "|---|---|---|" + "---|" * len(chans)]
    for p in sorted(doc["points"], key=lambda q: q["compression_ratio"]):
        lines.append(f"| {p['compression_ratio']:g} | {p['compact_dim']} | {p['symbols_per_image']} | "
                     + " | ".join(_pct(p["accuracy"].get(c)) for c in chans) + " |")
    return "\n".join(lines)


def _rel(path: str | Path, md_path: Path) -> str:
    return os.path.relpath(Path(path).resolve(), md_path.parent.resolve()).replace(os.sep, "/")


def _toml_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_literal(v)}" for k, v in value.items()) + "}"
    return json.dumps(str(value))  # a TOML basic string


def set_flags(preset_name: str | None, recorded: dict | None) -> list[str]:
    """``--set`` flags that turn the built-in preset into the recorded one (empty when unknown or equal)."""
    if not preset_name or not recorded:
        return []
    try:
        from rkdsc.common.train.presets import load_preset

        base = load_preset(preset_name).to_dict()
    except Exception:  # noqa: BLE001 - a preset file that moved or changed: no flags rather than no report
        return []
    flags = []
    for section, values in recorded.items():
        if section in ("name", "description", "workdir_default"):
            continue
        if not isinstance(values, dict):
            if base.get(section) != values:
                flags.append("--set " + shlex.quote(f"{section}={_toml_literal(values)}"))
            continue
        for key, value in values.items():
            if (base.get(section) or {}).get(key) != value:
                flags.append("--set " + shlex.quote(f"{section}.{key}={_toml_literal(value)}"))
    return flags


def train_flags(res: dict) -> list[str]:
    """The `rkdsc train` options (beyond --preset/--set) of a run, from ``results.json``'s
    ``options``; a run made before they were recorded has them inferred from what it holds
    (its methods, searches, SNRs and whether the feature cache was timed)."""
    from rkdsc.common.train.pipeline import BASELINES, DEFAULT_SNRS_DB

    opts = res.get("options")
    if opts is None:  # older results.json
        methods = list(res.get("methods") or {})
        opts = {"baselines": [m for m in methods if m != "rkd-sc"], "skip_darts": "darts" not in (res.get("search") or {}),
                "snrs_db": (res.get("eval") or {}).get("snrs_db"), "eval_limit": None,
                "time_cache": res.get("feature_cache") is not None}
    flags = []
    baselines = list(opts.get("baselines") or [])
    if not baselines:
        flags.append("--skip-baselines")
    elif baselines != list(BASELINES):
        flags.append("--baselines " + ",".join(baselines))
    if opts.get("skip_darts"):
        flags.append("--skip-darts")
    snrs = opts.get("snrs_db")
    if snrs and [float(v) for v in snrs] != [float(v) for v in DEFAULT_SNRS_DB]:
        flags.append("--snr=" + ",".join(f"{v:g}" for v in snrs))
    if opts.get("eval_limit"):
        flags.append(f"--eval-limit {opts['eval_limit']}")
    if opts.get("time_cache") is False:
        flags.append("--no-cache-timing")
    return flags


def _profile_flags(prof: dict) -> str:
    """The `rkdsc profile` options that reproduce a profile document's recorded settings."""
    st, mach = prof.get("settings") or {}, prof.get("machine") or {}
    cmd = ""
    if mach.get("threads"):
        cmd += f" --threads {mach['threads']}"
    if st.get("batches"):
        cmd += " --batches " + ",".join(str(b) for b in st["batches"])
    if st.get("teacher_batches") and st.get("teacher_batches") != st.get("batches"):
        cmd += " --teacher-batches " + ",".join(str(b) for b in st["teacher_batches"])
    methods = list(dict.fromkeys(r["method"] for r in prof.get("rows") or []
                                 if not str(r.get("source", "")).startswith("bundle:")))
    if set(methods) & set(OPTIONAL_METHODS):  # the default --methods leaves T-DeepSC / RTSC out
        cmd += " --methods " + ",".join(methods)
    defaults = ProfileOptions()
    for flag, key, default in (("--repeats", "repeats", defaults.repeats), ("--budget-s", "budget_s", defaults.budget_s),
                               ("--interleave-rounds", "interleave_rounds", defaults.interleave_rounds)):
        if st.get(key) is not None and st[key] != default:
            cmd += f" {flag} {st[key]:g}"
    return cmd


def regenerate_section(runs: list[dict], command: str, benches: list[dict] = (), profiles: list[dict] = ()) -> str:
    """The commands that made each run's inputs, from what the run recorded (preset, threads, profile
    and ablation settings), then the report command itself."""
    lines = ["## How these runs were made", "",
             "Reconstructed from each run's recorded settings (`results.json`, `profile.json`, "
             "`ablation/ablation.json`); `RKDSC_THREADS` sets the torch threads of every step.", "", "```bash"]
    from rkdsc.common.experiments.ablation import build_parser

    ablation_cli = build_parser()  # its defaults are the options a command can leave out
    for run in runs:
        d, res = run["dir"], run["results"] or {}
        if not run["exists"]:
            continue
        if res.get("preset"):
            env = f"RKDSC_THREADS={res['torch_threads']} " if res.get("torch_threads") else ""
            dev = f" --device {res['device']}" if res.get("device") else ""
            flags = "".join(" " + f for f in [*set_flags(res["preset"], res.get("preset_config")), *train_flags(res)])
            lines.append(f"{env}rkdsc train --preset {res['preset']} --workdir {d}{dev}{flags}")
        prof = run.get("profile")
        if prof:
            lines.append(f"rkdsc profile --workdir {d} --out {d}/profile.json" + _profile_flags(prof))
        abl = run.get("ablation")
        if abl:
            ratios = ",".join(f"{pt['compression_ratio']:g}" for pt in abl.get("points") or [])
            cmd = f"rkdsc ablation --workdir {d} --ratios {ratios}"
            for flag, key, dest in (("--epochs", "epochs", "epochs"), ("--noise-draws", "noise_draws", "noise_draws"),
                                    ("--snr", "snr_db", "snr")):
                if abl.get(key) is not None and abl.get(key) != ablation_cli.get_default(dest):
                    cmd += f" {flag} {abl[key]:g}" if isinstance(abl[key], float) else f" {flag} {abl[key]}"
            if abl.get("channels") and list(abl["channels"]) != str_list(ablation_cli.get_default("channels")):
                cmd += " --channels " + ",".join(abl["channels"])
            lines.append(cmd)
    for prof in profiles:  # extra --profile documents: the paper-scale one, or presets
        labels = [sp.get("label") for sp in prof.get("specs") or []]
        specs = "".join(f" --preset {lb}" for lb in labels if lb and lb != "paper-scale")
        out = f" --out {prof['source_file']}" if prof.get("source_file") else ""
        lines.append(f"rkdsc profile{specs}{out}" + _profile_flags(prof))
    for doc in benches:
        cmd = f"rkdsc bench --images {doc['images_per_edge']} --edges {','.join(str(e) for e in doc['networked'])}"
        enc = doc.get("encoder") or {}
        if enc.get("batches"):
            cmd += " --encoder-batches " + ",".join(str(b) for b in enc["batches"])
        if enc.get("threads"):
            cmd += f" --threads {enc['threads']}"
        if doc.get("rounds") and doc["rounds"] != DEFAULT_ROUNDS:
            cmd += f" --rounds {doc['rounds']}"
        if doc.get("source_file"):
            cmd += f" --out {doc['source_file']}"
        lines.append(cmd)
    lines += [command or "rkdsc report", "```"]
    return "\n".join(lines)


def recipe_section() -> str:
    """The full-scale `paper` recipe with its expected cost."""
    lines = ["## Full-scale recipe (`paper` preset, one GPU)", ""]
    preset = None
    try:
        from rkdsc.common.train.presets import load_preset

        preset = load_preset("paper")
    except Exception as exc:  # noqa: BLE001 - the report must render without it
        lines.append(f"_The `paper` preset could not be loaded here ({type(exc).__name__}: {exc})._\n")
    if preset is not None:
        lines += [f"Preset `paper`: data `{preset.data.dataset}` at {preset.data.input_size}x{preset.data.input_size}, "
                  f"teacher `{preset.teacher.name}` (checkpoint: `{preset.teacher.checkpoint or 'none: give a local CLIP checkpoint'}`), "
                  f"search {preset.search.epochs} epochs (lambda_J {preset.search.lambda_j}, T_alpha {preset.search.t_alpha}, "
                  f"T_beta {preset.search.t_beta}, lr_alpha {preset.search.lr_alpha} -> {preset.search.lr_alpha_min}, "
                  f"lr_w {preset.search.lr_w} -> {preset.search.lr_w_min}), stage 1 {preset.stage1.epochs} epochs "
                  f"({preset.stage1.lr} -> {preset.stage1.lr_min}), stage 2 {preset.stage2.epochs} epochs "
                  f"({preset.stage2.lr} -> {preset.stage2.lr_min}), SNR {preset.stage2.snr_db_range} dB, "
                  f"CAT ratio {preset.cat.compression_ratio}.", ""]
    lines += [
        "Commands (per data set; the CAT ratio follows the paper: 0.8 CIFAR10, 0.2 CIFAR100, 0.1 ImageNet):", "",
        "```bash",
        "rkdsc train --preset paper --workdir runs/paper-cifar10 --device cuda \\",
        "    --set teacher.checkpoint=/path/to/clip-vit-b16.safetensors",
        "rkdsc train --preset paper --workdir runs/paper-tinyimagenet --device cuda \\",
        "    --set data.dataset=tinyimagenet --set cat.compression_ratio=0.1 \\",
        "    --set teacher.checkpoint=/path/to/clip-vit-b16.safetensors",
        "rkdsc profile --workdir runs/paper-cifar10 --out runs/paper-cifar10/profile.json",
        "rkdsc ablation --workdir runs/paper-cifar10 --ratios 0.1,0.2,0.5,0.8,0.9",
        "rkdsc report --runs runs/paper-cifar10 runs/paper-tinyimagenet --out docs/reproduction.md",
        "```", "",
        f"Expected cost (paper): {PAPER['cost']}",
    ]
    est = _flop_estimate_cached(preset)
    if est:
        lines += ["", "A FLOP-count lower bound for the same recipe (training step = 3x the forward FLOPs, "
                  f"{est['assumed_tflops']:g} TFLOPS sustained, i.e. about a third of an RTX 4090's FP32 peak; data loading "
                  "and the evaluation sweeps are not counted, so the real time is longer):", "",
                  "| step | images x epochs | forward GFLOPs / image | PFLOP | hours at the assumed rate |",
                  "|---|---|---|---|---|"]
        for s in est["steps"]:
            lines.append(f"| {s['step']} | {s['images']:,} x {s['epochs']} | {s['gflops']:.3f} | {s['pflop']:.1f} | "
                         f"{s['hours']:.2f} |")
        lines.append(f"| total | | | {est['pflop']:.1f} | {est['hours']:.2f} |")
    return "\n".join(lines)


_FLOP_CACHE: dict[str, dict | None] = {}


def _flop_estimate_cached(preset) -> dict | None:
    key = "" if preset is None else preset.to_json()
    if key not in _FLOP_CACHE:
        _FLOP_CACHE[key] = _flop_estimate(preset)
    return _FLOP_CACHE[key]


def _flop_estimate(preset, n_train: int = 45_000, assumed_tflops: float = 25.0) -> dict | None:
    """Lower-bound training FLOPs of the paper recipe (CIFAR10 size, 90% train split)."""
    if preset is None:
        return None
    try:
        import torch

        from rkdsc.common.models import (CATDecoder, CATEncoder, SearchableStudent, Student, build_teacher,
                                   count_flops)

        s = preset.data.input_size
        img, snr = torch.zeros(1, 3, s, s), torch.full((1,), 10.0)
        sup = count_flops(SearchableStudent(preset.student_config()), img) / 1e9
        stu = count_flops(Student(preset.student_config(), list(preset.search.depths)), img) / 1e9
        cfg = preset.cat_config()
        h = torch.zeros(1, cfg.feature_dim)
        cat = (count_flops(CATEncoder(cfg), h, snr) + count_flops(CATDecoder(cfg), torch.zeros(1, cfg.compact_dim), snr)) / 1e9
        try:
            tea = count_flops(build_teacher(preset.teacher.name, feature_dim=preset.teacher.feature_dim,
                                            img_size=preset.teacher.img_size, **preset.teacher.timm_kwargs), img) / 1e9
        except Exception:  # noqa: BLE001 - timm missing the name: leave the teacher out
            tea = 0.0
    except Exception:  # noqa: BLE001
        return None
    steps = [
        # teacher features are cached once per split; the search trains the supernet on both halves
        {"step": "teacher features (once)", "images": n_train, "epochs": 1, "gflops": tea, "factor": 1},
        {"step": "KDL-DARTS search (supernet, weight + alpha steps)", "images": n_train, "epochs": preset.search.epochs,
         "gflops": sup, "factor": 3},
        {"step": "DARTS search (baseline)", "images": n_train, "epochs": preset.search.epochs, "gflops": sup, "factor": 3},
        {"step": "stage 1", "images": n_train, "epochs": preset.stage1.epochs, "gflops": stu, "factor": 3},
        {"step": "stage 2 (student + CAT)", "images": n_train, "epochs": preset.stage2.epochs, "gflops": stu + cat, "factor": 3},
        {"step": "JSCC-student baseline", "images": n_train, "epochs": preset.baseline.epochs, "gflops": stu, "factor": 3},
        # JSCC-teacher trains only a head on the cached teacher features: negligible
    ]
    for st in steps:
        st["pflop"] = st["images"] * st["epochs"] * st["gflops"] * st["factor"] / 1e6
        st["hours"] = st["pflop"] * 1e15 / (assumed_tflops * 1e12) / 3600
    return {"steps": steps, "pflop": sum(s["pflop"] for s in steps), "hours": sum(s["hours"] for s in steps),
            "assumed_tflops": assumed_tflops}


def bench_section(benches: list[dict]) -> list[str]:
    """The `rkdsc bench` results (the paper has no networked measurement to set them against)."""
    from rkdsc.common.experiments.bench_format import bench_markdown

    lines = ["## Networked emulator (`rkdsc bench`)", "",
             "The paper evaluates its system in simulation only, so these numbers have no counterpart there: "
             "in one run, side by side, the in-process pipeline (ONNX edge + numpy channel + ONNX server) against "
             "the networked topology (server, relay and 1 or 3 edge processes over localhost gRPC), the edge encoder "
             "with torch against onnxruntime, and the relay's channel cost per symbol. Ratios within a run are the "
             "figures to compare; absolute times are from a shared 2-core CPU.", ""]
    if not benches:
        return lines + ["_not run: give `--bench FILE.json` (`rkdsc bench --out FILE.json`)._", ""]
    for doc in benches:
        lines += [bench_markdown(doc), ""]
    return lines


def render(runs: list[dict], profiles: list[dict], extra_ablations: list[dict], out_md: Path, fig_dir: Path,
           command: str = "", benches: list[dict] | None = None) -> tuple[str, dict]:
    """The Markdown text and the machine-readable summary (claims) of the report."""
    from rkdsc.common.experiments import analysis
    from rkdsc.common.experiments.ablation import plot_fig8

    fig_dir.mkdir(parents=True, exist_ok=True)
    claims: list[dict] = []
    body: list[str] = []
    groups = seed_groups(runs)  # several seeds of one preset: their claims are judged on the mean
    grouped = {r["dir"] for g in groups.values() for r in g}
    for run in runs:
        ds, name = run["dataset"], run["name"]
        body += [f"## Run `{name}` ({DATASET_NAMES.get(ds, ds)})", ""]
        if not run["exists"]:
            body += [f"_not run: {run['dir']} does not exist._", ""]
            claims += run_claims(run)
            continue
        res = run["results"]
        if res:
            t, ev = res.get("teacher") or {}, res.get("eval") or {}
            parts = [f"Preset `{res.get('preset')}`"]
            for key, fmt in (("seed", "seed {}"), ("device", "device `{}`"), ("torch_threads", "{} torch threads")):
                if res.get(key) is not None:
                    parts.append(fmt.format(res[key]))
            if res.get("wall_s") is not None:
                calls = res.get("calls") or 1
                parts.append(f"wall time {res['wall_s']:.0f} s" + (f" over {calls} calls of `rkdsc train --resume`"
                                                                 if calls > 1 else ""))
            line = ", ".join(parts) + "."
            if t:
                line += (f" Teacher `{t.get('label') or t.get('name')}` ({t.get('source') or 'source not recorded'}"
                         + (f", {t['params']:,} parameters" if t.get("params") is not None else "")
                         + (f", validation accuracy {_pct(t['val_acc'])}%" if t.get("val_acc") is not None else "")
                         + ").")
            if ev.get("split"):
                line += f" Evaluation on `{ev['split']}` (n = {ev.get('n')})."
            body += [line, ""]
            steps = res.get("steps_s") or {}
            if steps:
                body += ["Step times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in steps.items()) + ".", ""]
        else:
            body += ["_results.json: not run (accuracy taken from eval/*.json where present)._", ""]
        body += ["### Fig. 6: top-1 accuracy (%) against SNR", "", accuracy_table(run), ""]
        curves = [{"channel": ch, "label": METHOD_LABELS[m], "bundle": m,
                   "points": [{"snr_db": s, "accuracy": a, "n": run["curve_n"].get(m, {}).get(ch, {}).get(s)}
                              for s, a in sorted(pts.items())]}
                  for m, chs in run["curves"].items() for ch, pts in chs.items()]
        if curves:
            from rkdsc.common.experiments.evaluate import plot_curves

            png = fig_dir / f"fig6-{name}.png"
            plot_curves(curves, png, title=f"Fig. 6 ({name})")
            body += [f"![Fig. 6 {name}]({_rel(png, out_md)})", ""]
        if run["methods"]:
            body += ["Parameters of the exported parts:", "", params_table(run), ""]
        body += ["### Fig. 7 and Table III: KDL-DARTS vs DARTS", ""]
        if run["archs"]:
            doc = analysis.analyze({m: Path(run["dir"]) / f"search-{m}" / "arch.json" for m in run["archs"]}, name, fig_dir)
            body += [analysis.table_iii_markdown([doc]), "", f"![Fig. 7 {name}]({_rel(doc['fig7_png'], out_md)})", ""]
        else:
            body += ["_not run: no search-kdl-darts/arch.json or search-darts/arch.json._", ""]
        body += ["### Fig. 8: compression-ratio ablation", ""]
        if run["ablation"]:
            png = plot_fig8([run["ablation"]], fig_dir / f"fig8-{name}.png", title=f"Fig. 8 ({name})")
            a = run["ablation"]
            body += [f"Stage 2 retrained for {a.get('epochs')} epochs per ratio from the run's stage-1 student; "
                     f"evaluated on `{a.get('eval_split')}` (n = {a.get('n')}), {a.get('noise_draws')} noise draws.", "",
                     ablation_table(a), "", f"![Fig. 8 {name}]({_rel(png, out_md)})", ""]
        else:
            body += ["_not run: no ablation/ablation.json (run `rkdsc ablation --workdir "
                     f"{run['dir']}`)._", ""]
        if run["dir"] not in grouped:
            claims += run_claims(run)
    for preset_name, group in groups.items():
        body += [f"## Preset `{preset_name}` over {len(group)} seeds", "",
                 "The claims of these runs are judged once, on the mean over the seeds (the claims table gives the "
                 "mean, the sample standard deviation and the range); per seed:", "", seeds_table(group), ""]
        claims += mean_claims(group)
    for a in extra_ablations:
        ds = a.get("dataset", "unknown")
        label = f"ablation-{a.get('preset', ds)}"
        png = plot_fig8([a], fig_dir / f"fig8-{label}.png")
        body += [f"## Fig. 8 from {a.get('workdir', label)}", "", ablation_table(a), "",
                 f"![Fig. 8]({_rel(png, out_md)})", ""]
        claims.append(fig8_claim(a, ds, str(a.get("workdir", label))))

    # Table II
    t2 = ["## Table II: encoder complexity and encode latency", ""]
    all_profiles = profiles + [r["profile"] for r in runs if r.get("profile")]
    if all_profiles:
        from rkdsc.common.experiments.profile import markdown_table

        teachers = [r for d in all_profiles for r in d.get("rows") or [] if r["method"] == "jscc-teacher" and r.get("cpu_ms")]
        for doc in all_profiles:
            t2 += [markdown_table(doc), ""]
            claims += profile_claims(doc, teachers)
        base = baseline_table_ii(all_profiles)
        if base:
            t2 += ["T-DeepSC and RTSC measured next to the paper's printed Table II rows (the paper's GFLOPs "
                   "column matches MAC counts: compare it with GMACs; the paper's times are an RTX 4090 and an "
                   "i9-14900KF at 224x224):", "", base, ""]
    else:
        t2 += ["_not run: no profile JSON (run `rkdsc profile --workdir RUN --out RUN/profile.json`)._", ""]
        claims += profile_claims({"rows": []}) or [
            _claim("cat_latency_overhead", "the CAT adds only a marginal CPU encode delay", "?", None, None, "%",
                   "not run", "needs a profile JSON", "-"),
            _claim("teacher_slowdown", "JSCC-teacher's encoder is much slower than RKD-SC's", "?", None, None, "x",
                   "not run", "needs a profile JSON", "-")]
    from rkdsc.common.experiments.profile import paper_table_markdown

    t2 += ["The paper's Table II (GPU: RTX 4090; CPU: i9-14900KF; IoT: Raspberry Pi 4 B estimated as "
           f"t_CPU x {PAPER_CPU_GFLOPS}/{PI_GFLOPS:g}):", "", paper_table_markdown(), ""]

    t3 = ["## The paper's Table III", "",
          "Printed values, with the depths that reproduce the printed totals from this code's Table I block counts "
          "(the printed CIFAR10 DARTS L1/L2 entries are 10x the block counts 0.0227/0.042, and the CIFAR100 L4 "
          "entries of DARTS and KDL-DARTS appear swapped: the printed totals are the sums with them exchanged).", ""]
    try:
        t3 += [paper_table_iii_markdown(), ""]
    except Exception as exc:  # noqa: BLE001
        t3 += [f"_could not build the search space here: {exc}_", ""]

    counts = {v: sum(c["verdict"] == v for c in claims) for v in VERDICTS}
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
    head = ["# Reproduction of the RKD-SC paper at CPU scale", "",
            f"_Generated by `{command or 'rkdsc report'}` on {now}. Do not edit by hand: rerun the command._", "",
            "The runs below are far smaller than the paper's (CPU presets: small inputs, few epochs, a self-trained "
            "teacher instead of CLIP ViT-B/16), so the paper's absolute numbers are not expected; each claim is "
            "recomputed from the run's outputs and judged by the stated rule. Verdicts: **holds** (the paper's number "
            "is reached), **holds qualitatively** (same direction, smaller effect), **does not hold**, **not measured** "
            "(the run lacks the method the claim needs, e.g. T-DeepSC in a run made before `rkdsc train` trained it), "
            "**not run** (input missing).", "",
            "Summary: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n) + ".", "",
            "## Claims", "", claims_table(claims), ""]
    text = "\n".join(head + body + t2 + bench_section(benches or []) + t3
                     + [regenerate_section(runs, command, benches or [], profiles), "", recipe_section(), ""])
    summary = {"generated": now, "command": command, "runs": [r["dir"] for r in runs], "claims": claims,
               "verdict_counts": counts}
    return text, summary


def _read_docs(paths: Iterable[str]) -> list[dict]:
    """The readable JSON documents among ``paths``, each remembering its file (``source_file``)."""
    docs = []
    for path in paths:
        doc = _read_json(Path(path))
        if isinstance(doc, dict):
            doc["source_file"] = str(path)
            docs.append(doc)
    return docs


def generate(run_dirs: Iterable[str], out_md: str | Path, fig_dir: str | Path | None = None,
             profiles: Iterable[str] = (), ablations: Iterable[str] = (), command: str = "",
             benches: Iterable[str] = (), keep_inputs: str | Path | None = None) -> dict:
    """Write the report and its figures; returns the summary (also written next to it as JSON).
    ``keep_inputs``: copy each existing run's report inputs to ``keep_inputs/<run name>/`` first
    (``snapshot_run``), and the extra profile / ablation / bench files to
    ``keep_inputs/<their folder name>/`` (``snapshot_files``; listed in the summary's ``kept``)."""
    out_md = Path(out_md)
    fig_dir = Path(fig_dir) if fig_dir else out_md.parent / "figures"
    run_dirs, profiles, ablations, benches = list(run_dirs), list(profiles), list(ablations), list(benches or [])
    if keep_inputs is not None:
        names = [Path(d).resolve().name for d in run_dirs]
        if len(set(names)) != len(names):
            raise ValueError(f"--keep-inputs: runs with the same folder name {names}: their copies would collide")
        for d, name in zip(run_dirs, names):
            if Path(d).is_dir():
                snapshot_run(d, Path(keep_inputs) / name)
        kept = snapshot_files([*profiles, *ablations, *benches], keep_inputs)
    runs = [collect_run(d) for d in run_dirs]
    prof_docs, abl_docs, bench_docs = _read_docs(profiles), _read_docs(ablations), _read_docs(benches)
    text, summary = render(runs, prof_docs, abl_docs, out_md, fig_dir, command, bench_docs)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text(text, encoding="utf-8")
    out_md.with_suffix(".json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    summary["markdown"] = str(out_md)
    if keep_inputs is not None:
        summary["kept"] = [str(k) for k in kept]
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rkdsc report",
        description="Regenerate docs/reproduction.md (and docs/figures/*.png) from `rkdsc train` work dirs: Fig. 6 "
                    "accuracy tables, Fig. 7 / Table III (searches), Table II (profile JSON), Fig. 8 (ablation JSON), "
                    "each next to the paper's numbers with a computed verdict per claim, plus the full-scale recipe. "
                    "Missing inputs become 'not run' rows. `rkdsc report search --help`: Fig. 7 / Table III alone.")
    p.add_argument("--runs", nargs="+", default=[], metavar="DIR", help="pipeline work dirs (rkdsc train --workdir)")
    p.add_argument("--out", default="docs/reproduction.md", metavar="FILE.md", help="Markdown file to write "
                   "(a .json with the claims is written next to it)")
    p.add_argument("--figures", default=None, metavar="DIR", help="figure directory (default: figures/ next to --out)")
    p.add_argument("--profile", action="append", default=[], metavar="FILE.json",
                   help="extra `rkdsc profile` JSON (RUN/profile.json is picked up automatically); repeatable")
    p.add_argument("--ablation", action="append", default=[], metavar="FILE.json",
                   help="extra `rkdsc ablation` JSON (RUN/ablation/ablation.json is automatic); repeatable")
    p.add_argument("--bench", action="append", default=[], metavar="FILE.json",
                   help="`rkdsc bench --out` JSON: the networked-emulator section; repeatable")
    p.add_argument("--keep-inputs", default=None, metavar="DIR",
                   help="copy each run's report inputs (its small JSON files) to DIR/<run name>/, and each "
                        "--profile / --ablation / --bench file to DIR/<its folder name>/; such a copy works as a "
                        "--runs DIR (or --profile FILE ...) later, after the work dir is gone (e.g. docs/runs)")
    return p


def cli(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "search":
        from rkdsc.common.experiments import analysis

        return analysis.cli(argv[1:], prog="rkdsc report search")
    args = build_parser().parse_args(argv)
    for flag, files in (("--profile", args.profile), ("--ablation", args.ablation), ("--bench", args.bench)):
        for f in files:
            if not isinstance(_read_json(Path(f)), dict):
                print(f"rkdsc report: {flag} {f}: not a readable JSON document", file=sys.stderr)
                return 2
    if not args.runs and not args.profile and not args.ablation and not args.bench:
        print("rkdsc report: give --runs DIR [DIR ...] (and/or --profile / --ablation files)", file=sys.stderr)
        return 2
    command = "rkdsc report " + " ".join(shlex.quote(a) for a in argv)
    try:
        summary = generate(args.runs, args.out, args.figures, args.profile, args.ablation, command, args.bench,
                           keep_inputs=args.keep_inputs)
    except ValueError as exc:
        print(f"rkdsc report: {exc}", file=sys.stderr)
        return 2
    counts = summary["verdict_counts"]
    print(f"wrote {summary['markdown']} ({', '.join(f'{n} {v}' for v, n in counts.items() if n)})")
    for k in summary.get("kept", []):
        print(f"kept {k}")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
