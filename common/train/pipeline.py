"""``rkdsc train``: the whole RKD-SC recipe for one preset, top to bottom.

    rkdsc train --preset cifar10-cpu --workdir runs/cifar10-cpu [--skip-baselines] [--resume]
    rkdsc train-default --out deploy/bundle       # THE command that produced the committed default bundle

Steps (each writes under WORKDIR and, with --resume, is skipped when already finished):

 1. teacher         rkdsc.common.train.teacher.get_teacher: the preset's checkpoint, or (no checkpoint)
                    it trains its own teacher and says so             -> teacher/
 2. searches        KDL-DARTS and DARTS over the Table I depth space   -> search-kdl-darts/, search-darts/
 3. stage 1         MSE distillation of the KDL-DARTS architecture     -> stage1/
 4. stage 2         student + CAT + head through the channel (Eq. 26)  -> stage2/
 5. baselines       JSCC-student, JSCC-teacher, T-DeepSC and RTSC      -> baseline-<kind>/
 6. export          one bundle per method                              -> bundles/<method>/
 7. evaluation      every bundle at -10..25 dB, AWGN and Rayleigh, on the preset's held-back split
                    (digits) or validation split, through onnxruntime   -> eval/<method>-<channel>.json, eval/fig6.png
 8. summary         teacher accuracy, accuracy at 25 / -10 dB per method, encoder parameters,
                    KDL-DARTS vs DARTS, feature-cache speed-up         -> results.json

The pipeline runs in one process (CPU or one GPU). For several GPUs run the steps one by one
under torchrun (``rkdsc search`` / ``distill`` / ``baseline`` accept it; see docs/training.md),
then ``rkdsc train --resume`` picks up their outputs and does the rest.
"""
from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from rkdsc.common.experiments.evaluate import DEFAULT_SNRS_DB
from rkdsc.common.cliargs import str_list

DEFAULT_BUNDLE_MAX_BYTES = 20_000_000  # each task of the embedded default bundle must stay <= 20 MB
METHOD_LABELS = {"rkd-sc": "RKD-SC", "jscc-student": "JSCC-student", "jscc-teacher": "JSCC-teacher",
                 "t-deepsc": "T-DeepSC", "rtsc": "RTSC"}
BASELINES = ("jscc-student", "jscc-teacher", "t-deepsc", "rtsc")  # trained by `rkdsc train` unless --baselines says less
EVAL_CHANNELS = ("awgn", "rayleigh")


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _acc_at(points: list[dict], snr_db: float) -> float | None:
    for p in points:
        if abs(p["snr_db"] - snr_db) < 1e-9:
            return p["accuracy"]
    return None


class StepLedger:
    """Seconds per pipeline step, summed over every ``rkdsc train`` call on one work dir
    (WORKDIR/steps.json), so a resumed run reports what its steps cost in all, not what the last
    call spent reusing them. A step interrupted part way (Ctrl-C, SIGTERM, an exception) keeps the
    time it ran; a SIGKILL loses the current call's unsaved time (the file is written after every
    step). A call without ``resume`` starts the ledger over, since it retrains every step.

    File: ``{"steps_s": {step: seconds}, "calls": [{"started", "wall_s", "ended": "finished" |
    "interrupted: <exception>"}]}``."""

    def __init__(self, workdir: Path, resume: bool):
        self.path = workdir / "steps.json"
        data = (_read(self.path) or {}) if resume else {}
        self.steps_s: dict[str, float] = {k: float(v) for k, v in (data.get("steps_s") or {}).items()}
        self.calls: list[dict] = list(data.get("calls") or [])
        self.t_call = time.time()
        started = datetime.datetime.fromtimestamp(self.t_call, datetime.timezone.utc).replace(microsecond=0)
        self.calls.append({"started": started.isoformat(), "wall_s": 0.0, "ended": "running"})
        self._current: tuple[str, float] | None = None

    def start(self, name: str) -> None:
        self._current = (name, time.time())

    def _close_step(self) -> None:
        if self._current is not None:
            name, t0 = self._current
            self.steps_s[name] = round(self.steps_s.get(name, 0.0) + time.time() - t0, 2)
            self._current = None

    def finish(self) -> None:
        """End the current step and write the file."""
        self._close_step()
        self.save()

    def end(self, how: str) -> None:
        """End the call (``how``: "finished" or "interrupted: <exception>") and write the file."""
        self._close_step()
        self.calls[-1]["ended"] = how
        self.save()

    @property
    def call_s(self) -> float:
        """Wall time of this call up to now."""
        return round(time.time() - self.t_call, 2)

    @property
    def wall_s(self) -> float:
        """Wall time of every call so far, this one up to now."""
        return round(sum(c["wall_s"] for c in self.calls[:-1]) + self.call_s, 2)

    def save(self) -> None:
        from rkdsc.common.train.common import write_json  # torch is loaded by then (_run_steps)

        self.calls[-1]["wall_s"] = self.call_s
        write_json(self.path, {"steps_s": self.steps_s, "calls": self.calls})


def run_pipeline(preset, workdir: str | Path, *, skip_baselines: bool = False, skip_darts: bool = False,
                 resume: bool = False, snrs_db: list[float] | None = None, eval_limit: int | None = None,
                 time_cache: bool = True, log: Callable[[str], None] = print,
                 baselines: Sequence[str] = BASELINES) -> dict:
    """Run every step for ``preset`` in ``workdir``; returns the results.json content.
    ``baselines``: the baseline methods to train, export and evaluate (none with ``skip_baselines``).
    Step times and the wall time add up over resumed calls (``StepLedger``): ``steps_s`` and
    ``wall_s`` are totals over ``calls`` calls, ``wall_s_last_call`` is this call's."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ledger = StepLedger(workdir, resume)
    try:
        results = _run_steps(preset, workdir, ledger=ledger, skip_baselines=skip_baselines, skip_darts=skip_darts,
                             resume=resume, snrs_db=snrs_db, eval_limit=eval_limit, time_cache=time_cache,
                             log=log, baselines=baselines)
    except BaseException as exc:
        ledger.end(f"interrupted: {type(exc).__name__}")
        raise
    ledger.end("finished")
    return results


def _run_steps(preset, workdir: Path, *, ledger: StepLedger, skip_baselines: bool, skip_darts: bool,
               resume: bool, snrs_db: list[float] | None, eval_limit: int | None, time_cache: bool,
               log: Callable[[str], None], baselines: Sequence[str]) -> dict:
    """``run_pipeline``'s steps, timed by ``ledger``."""
    import torch

    from rkdsc.common.models.complexity import count_params
    from rkdsc.common.train.baselines import run_baseline
    from rkdsc.common.train.distill import make_tasks, run_stage1, run_stage2
    from rkdsc.common.experiments.evaluate import plot_curves, run_evaluation
    from rkdsc.common.train.export import export_from_workdir
    from rkdsc.common.train.search import run_search
    from rkdsc.common.train.teacher import get_teacher

    snrs = list(snrs_db or DEFAULT_SNRS_DB)

    def step(name: str) -> Callable[[], None]:
        ledger.start(name)
        log(f"== {name}")
        return ledger.finish

    # 1. teacher ------------------------------------------------------------------------------
    done = step("teacher")
    if not preset.teacher.checkpoint:
        log(f"no teacher checkpoint in preset {preset.name!r}: using (or training) the preset's own teacher "
            f"{preset.teacher.name} for {preset.teacher.train_epochs} epochs")
    teacher = get_teacher(preset, workdir, log=log)
    tmeta = _read(workdir / "teacher" / "teacher.json") or {}
    done()

    # 2. searches -----------------------------------------------------------------------------
    archs: dict[str, dict] = {}
    for method in ("kdl-darts",) + (() if skip_darts else ("darts",)):
        done = step(f"search {method}")
        arch_file = workdir / f"search-{method}" / "arch.json"
        if resume and arch_file.is_file():
            archs[method] = _read(arch_file)
            log(f"search {method}: reusing {arch_file} (depths {archs[method]['depths']})")
        else:
            archs[method] = run_search(preset, method, workdir, teacher=teacher, log=log, resume=resume)
        done()

    # 3-4. RKD stages on the KDL-DARTS architecture ---------------------------------------------
    task = make_tasks([preset], workdir, [workdir / "search-kdl-darts" / "arch.json"])[0]
    done = step("stage 1")
    s1 = run_stage1(preset, workdir, task=task, teacher=teacher, resume=resume, log=log)
    done()
    done = step("stage 2")
    s2 = run_stage2(preset, workdir, tasks=[task], teachers=[teacher], resume=resume, log=log)
    done()

    # 5. baselines ------------------------------------------------------------------------------
    methods = ["rkd-sc"]
    base: dict[str, dict] = {}
    if not skip_baselines:
        for kind in baselines:
            done = step(f"baseline {kind}")
            base[kind] = run_baseline(preset, kind, workdir, task=task, teacher=teacher, resume=resume, log=log)
            methods.append(kind)
            done()

    # 6. export -----------------------------------------------------------------------------------
    bundles: dict[str, Path] = {}
    command = " ".join(shlex.quote(a) for a in ["rkdsc", *sys.argv[1:]]) if sys.argv else ""
    for m in methods:
        done = step(f"export {m}")
        target = workdir / "bundles" / m
        if resume and bundle_up_to_date(workdir, m, target):
            log(f"export {m}: reusing {target} (newer than the trained weights, verifies)")
            bundles[m] = target
        else:
            bundles[m] = export_from_workdir(workdir, target, m, provenance={
                "preset": preset.name, "seed": preset.seed, "command": command,
                # what it was trained on: `rkdsc evaluate --data` warns when pointed at this folder
                "data": {"dataset": preset.data.dataset,
                         "root": str(preset.data_root()) if preset.data.dataset != "digits" else "",
                         "val_fraction": preset.data.val_fraction, "max_per_class": preset.data.max_per_class}})
        done()

    # 7. evaluation ---------------------------------------------------------------------------------
    curves = []
    evals: dict[str, dict[str, dict]] = {m: {} for m in methods}
    for ch in EVAL_CHANNELS:
        done = step(f"evaluate {ch}")
        res = run_evaluation([str(bundles[m]) for m in methods], [METHOD_LABELS[m] for m in methods], ch, snrs,
                             preset=preset, seed=preset.seed, limit=eval_limit)
        for m, c in zip(methods, res.get("curves", [res])):
            c = {k: v for k, v in c.items() if k != "curves"}
            (workdir / "eval").mkdir(parents=True, exist_ok=True)
            (workdir / "eval" / f"{m}-{ch}.json").write_text(json.dumps(c, indent=2) + "\n")
            evals[m][ch] = c
            curves.append(c)
        done()
    from rkdsc.common.train.export import add_metrics

    for m in methods:  # the deployed bundle carries its own evaluation
        add_metrics(bundles[m], {f"eval_{ch}": {f"{p['snr_db']:g}dB": round(p["accuracy"], 4)
                                                for p in evals[m][ch]["points"]}
                                 for ch in EVAL_CHANNELS} | {"eval_split": curves[0]["data"],
                                                             "eval_n": curves[0]["points"][0]["n"]})
    plot_curves(curves, workdir / "eval" / "fig6.png", title=f"{preset.name}: accuracy vs SNR ({curves[0]['data']})")

    # feature cache timing (optional) ------------------------------------------------------------
    cache = (_read(workdir / "results.json") or {}).get("feature_cache")  # kept when not re-measured
    if time_cache:
        done = step("feature-cache timing")
        try:
            from rkdsc.common.train.features import time_feature_cache

            cache = time_feature_cache(preset, workdir, max_batches=10, log=log)
        except Exception as exc:  # a timing aid must not fail the pipeline
            log(f"feature-cache timing skipped: {type(exc).__name__}: {exc}")
        done()

    # 8. summary ------------------------------------------------------------------------------------
    from rkdsc.common.bundle.manifest import read_manifest
    from rkdsc.common.models.registry import get_method

    def method_summary(m: str) -> dict:
        man = read_manifest(bundles[m])
        t = man["tasks"][0]
        comp = man["components"]
        spec_dir = get_method(m).root(workdir) / task.name
        spec = _read(spec_dir / "model.json") or {}
        params = spec.get("params", {})
        enc = params.get("student", params.get("encoder"))
        return {"bundle": str(bundles[m]), "encoder_params": enc,
                "edge_params": comp[t["edge"]]["params"], "server_params": comp[t["server"]]["params"],
                "symbols_per_image": t["symbols_per_image"], "compact_dim": t["compact_dim"],
                # at 25 / -10 dB: None when --snr left them out (the summary then reads the curves)
                "accuracy": {ch: {"25": _acc_at(evals[m][ch]["points"], 25.0),
                                  "-10": _acc_at(evals[m][ch]["points"], -10.0)} for ch in EVAL_CHANNELS},
                "curves": {ch: evals[m][ch]["points"] for ch in EVAL_CHANNELS}}

    search = {m: {"depths": a["depths"], "selected_params": a.get("selected_params"), "val_acc": a.get("val_acc")}
              for m, a in archs.items()}
    results = {
        "preset": preset.name, "seed": preset.seed, "workdir": str(workdir.resolve()),
        "device": str(getattr(teacher, "device", None) or next(teacher.parameters()).device),
        "torch_threads": torch.get_num_threads(),
        "preset_config": preset.to_dict(),  # with any --set overrides applied (the report turns them back into flags)
        # the `rkdsc train` options of this call (the report turns them back into flags)
        "options": {"baselines": [] if skip_baselines else list(baselines), "skip_darts": skip_darts,
                    "snrs_db": snrs, "eval_limit": eval_limit, "time_cache": time_cache},
        "teacher": {"name": preset.teacher.name, "label": getattr(teacher, "label", preset.teacher.name),
                    "source": preset.teacher.checkpoint or "self-trained",
                    # a checkpoint teacher has no classifier for this data set: no accuracy to measure
                    "val_acc": tmeta.get("val_acc") if not preset.teacher.checkpoint else None,
                    "params": count_params(teacher)},
        "search": search,
        "stage1": {k: s1.get(k) for k in ("depths", "val_mse_init", "val_mse_final", "epochs", "student_params", "time_s")},
        "stage2": {"epochs": s2.get("epochs"), "time_s": s2.get("time_s"),
                   "val": {t["task"]: t["val"] for t in s2.get("tasks", [])}},
        "baselines": {k: {"val": v.get("val"), "trained": v.get("trained"), "time_s": v.get("time_s")}
                      for k, v in base.items()},
        "methods": {m: method_summary(m) for m in methods},
        "eval": {"snrs_db": snrs, "channels": list(EVAL_CHANNELS), "split": curves[0]["data"],
                 "n": curves[0]["points"][0]["n"], "plot": str(workdir / "eval" / "fig6.png")},
        "feature_cache": cache,
        # totals over every call on this work dir (StepLedger), and this call's own wall time
        "steps_s": dict(ledger.steps_s), "wall_s": ledger.wall_s, "calls": len(ledger.calls),
        "wall_s_last_call": ledger.call_s,
    }
    if "darts" in search:
        k, d = search["kdl-darts"], search["darts"]
        if k["selected_params"] and d["selected_params"]:
            results["search"]["kdl_vs_darts_param_reduction"] = round(1 - k["selected_params"] / d["selected_params"], 4)
    (workdir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    log(summary_table(results))
    return results


def bundle_up_to_date(workdir: Path, method: str, bundle: Path) -> bool:
    """True when ``bundle`` verifies and is newer than every trained weight file of ``method``."""
    from rkdsc.common.bundle.manifest import verify_bundle
    from rkdsc.common.models.registry import get_method

    manifest = bundle / "manifest.json"
    if not manifest.is_file() or verify_bundle(bundle):
        return False
    try:
        weights = [f for d in get_method(method).task_dirs(workdir) for f in d.glob("*.safetensors")]
    except FileNotFoundError:
        return False
    return all(f.stat().st_mtime <= manifest.stat().st_mtime for f in weights)


def _num(v, spec: str = ".3f") -> str:
    return "n/a" if v is None else format(v, spec)


def teacher_accuracy_text(teacher: dict) -> str:
    """'val acc 0.9312', or why there is none (a checkpoint teacher has no classifier for the data)."""
    if teacher.get("val_acc") is not None:
        return f"val acc {teacher['val_acc']:.4f}"
    if teacher.get("source") not in (None, "", "self-trained"):
        return "val acc not measured (pretrained checkpoint: no classifier trained on this data set)"
    return "val acc n/a"


def summary_table(results: dict) -> str:
    """The readable summary `rkdsc train` ends with (works for any --snr list)."""
    t = results["teacher"]
    lines = [f"results for preset {results['preset']} (eval on {results['eval']['split']}, n={results['eval']['n']}):",
             f"  teacher {t.get('label') or t['name']}: {teacher_accuracy_text(t)}"]
    snrs = results["eval"].get("snrs_db") or DEFAULT_SNRS_DB
    hi, lo = max(snrs), min(snrs)
    for m, s in results["methods"].items():
        curves = s.get("curves") or {}
        parts = []
        for ch, name in (("awgn", "AWGN"), ("rayleigh", "Rayleigh")):
            pts = curves.get(ch) or []
            parts.append(f"{name} {hi:g} dB {_num(_acc_at(pts, hi))}, {lo:g} dB {_num(_acc_at(pts, lo))}")
        lines.append(f"  {METHOD_LABELS.get(m, m):>13s}: encoder {_num(s['encoder_params'], ',')} params, "
                     f"{s['symbols_per_image']} symbols/image; " + "; ".join(parts))
    for m, s in results["search"].items():
        if isinstance(s, dict):
            lines.append(f"  search {m}: depths {s['depths']}, {_num(s.get('selected_params'), ',')} params, "
                         f"val acc {_num(s.get('val_acc'), '.4f')}")
    calls = results.get("calls") or 1
    lines.append(f"  wall time {results['wall_s']:.0f} s" + (f" over {calls} calls (this call {results['wall_s_last_call']:.0f} s)"
                                                          if calls > 1 else ""))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- train-default

DEFAULT_PRESETS = ("default", "default-shapes")  # the tasks of the embedded default bundle, in task order


def train_default(out: str | Path, workdir: str | Path | None = None, resume: bool = False,
                  sets: list[str] | None = None, log: Callable[[str], None] = print,
                  presets: Sequence[str] = DEFAULT_PRESETS) -> dict:
    """Train the embedded default bundle: one task per preset of ``presets`` (``default``: digits
    32 px, ``default-shapes``: generated shapes 40 px), each through ``train_default_task`` into
    ``<its workdir>/bundle``, then merged (``rkdsc.common.bundle.merge``) into ``out``. The first
    preset trains in ``workdir`` (default: its ``workdir_default``), the others in
    ``<workdir>/../<preset name>`` (default: theirs). ``sets`` apply to every preset.
    Returns ``{"bundle", "bytes", "tasks": {preset: train_default_task result}, "wall_s"}``."""
    from rkdsc.common.bundle.merge import merge_bundles
    from rkdsc.common.train.export import bundle_bytes
    from rkdsc.common.train.presets import load_preset

    t0 = time.time()
    if not presets:
        raise ValueError("presets: expected at least one preset")
    results, parts = {}, []
    for i, name in enumerate(presets):
        preset = load_preset(name)
        if workdir is None:
            wd = Path(preset.workdir_default)
        else:
            wd = Path(workdir) if i == 0 else Path(workdir).parent / preset.name
        part = Path(out) if len(presets) == 1 else wd / "bundle"
        results[name] = train_default_task(name, part, wd, resume=resume, sets=sets, log=log)
        parts.append(part)
    if len(parts) > 1:
        command = "rkdsc train-default " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if len(sys.argv) > 1 else ""
        merge_bundles(parts, out, overwrite=True, command=command.strip() or "rkdsc train-default")
    res = {"bundle": str(out), "bytes": bundle_bytes(out), "tasks": results, "wall_s": round(time.time() - t0, 1)}
    log(f"default bundle -> {out} ({res['bytes'] / 1e6:.2f} MB, tasks {', '.join(r['task'] for r in results.values())}); "
        f"{res['wall_s']:.0f} s")
    return res


def train_default_task(preset_name: str, out: str | Path, workdir: str | Path | None = None, resume: bool = False,
                       sets: list[str] | None = None, log: Callable[[str], None] = print) -> dict:
    """Train one preset of the default bundle and export its one-task RKD-SC bundle to ``out``
    (<= ``DEFAULT_BUNDLE_MAX_BYTES`` per task).

    Runs teacher, KDL-DARTS search, stage 1 and stage 2 (no DARTS, no baselines: only what the
    bundle needs), exports, checks the size, and evaluates the bundle on the task's held-back
    part (digits: the held-back digits; shapes: the held-back seed).
    """
    from rkdsc.common.train.distill import make_tasks, run_stage1, run_stage2
    from rkdsc.common.experiments.evaluate import run_evaluation
    from rkdsc.common.train.export import bundle_bytes, export_from_workdir
    from rkdsc.common.train.presets import load_preset, parse_set_args
    from rkdsc.common.train.search import run_search
    from rkdsc.common.train.teacher import get_teacher

    t0 = time.time()
    preset = load_preset(preset_name, parse_set_args(sets))
    workdir = Path(workdir or preset.workdir_default)
    teacher = get_teacher(preset, workdir, log=log)
    arch_file = workdir / "search-kdl-darts" / "arch.json"
    if not (resume and arch_file.is_file()):
        run_search(preset, "kdl-darts", workdir, teacher=teacher, log=log, resume=resume)
    task = make_tasks([preset], workdir, [arch_file])[0]
    run_stage1(preset, workdir, task=task, teacher=teacher, resume=resume, log=log)
    run_stage2(preset, workdir, tasks=[task], teachers=[teacher], resume=resume, log=log)
    command = "rkdsc train-default " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if len(sys.argv) > 1 else ""
    out = Path(out)
    export_from_workdir(workdir, out, "rkd-sc", provenance={"preset": preset.name, "seed": preset.seed,
                                                            "command": command.strip() or "rkdsc train-default"})
    size = bundle_bytes(out)
    if size > DEFAULT_BUNDLE_MAX_BYTES:
        raise RuntimeError(f"default bundle task {task.name!r} ({out}) is {size / 1e6:.2f} MB, over the "
                           f"{DEFAULT_BUNDLE_MAX_BYTES / 1e6:.0f} MB limit per task: shrink the {preset.name!r} preset "
                           "(cat.d_ff, student widths) and retrain")
    res = {"task": task.name, "bundle": str(out), "bytes": size, "wall_s": None, "heldout": {}}
    for ch in EVAL_CHANNELS:
        ev = run_evaluation([str(out)], None, ch, [-10.0, 0.0, 10.0, 20.0], preset=preset, seed=preset.seed)
        res["heldout"][ch] = ev["points"]
    res["wall_s"] = round(time.time() - t0, 1)
    from rkdsc.common.train.export import add_metrics

    add_metrics(out, {f"heldout_{ch}": {f"{p['snr_db']:g}dB": round(p["accuracy"], 4) for p in pts}
                      for ch, pts in res["heldout"].items()} | {"heldout_n": res["heldout"]["awgn"][0]["n"]})
    (workdir / "train-default.json").write_text(json.dumps(res, indent=2) + "\n")
    pts = "  ".join(f"{p['snr_db']:g} dB {p['accuracy']:.3f}" for p in res["heldout"]["awgn"])
    log(f"default bundle task {task.name} -> {out} ({size / 1e6:.2f} MB); held-back accuracy (AWGN): {pts}; "
        f"{res['wall_s']:.0f} s")
    return res


# ----------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rkdsc train",
        description="Run a whole preset: teacher (trains its own when the preset has no checkpoint), KDL-DARTS and "
                    "DARTS searches, RKD stage 1 and 2 on the KDL-DARTS architecture, JSCC-student and JSCC-teacher "
                    "baselines, export of each method to WORKDIR/bundles/<method>, evaluation at -10..25 dB (AWGN "
                    "and Rayleigh) and WORKDIR/results.json.")
    p.add_argument("--preset", required=True, metavar="NAME", help="built-in preset name or a .toml path")
    p.add_argument("--workdir", metavar="DIR", help="work directory (default: the preset's workdir_default)")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="override a preset value (TOML literal), e.g. --set stage2.epochs=3; repeatable")
    p.add_argument("--skip-baselines", action="store_true", help="do not train / export / evaluate any baseline")
    p.add_argument("--baselines", type=str_list, default=list(BASELINES), metavar="LIST",
                   help=f"comma-separated baselines to train, export and evaluate (default: all of {','.join(BASELINES)})")
    p.add_argument("--skip-darts", action="store_true", help="do not run the DARTS search (only KDL-DARTS)")
    p.add_argument("--resume", action="store_true",
                   help="skip finished steps and continue interrupted ones from their checkpoints")
    p.add_argument("--snr", metavar="LIST", help="evaluation SNRs in dB (default -10,-5,...,25)")
    p.add_argument("--eval-limit", type=int, metavar="N", help="evaluate on a seeded subset of N images")
    p.add_argument("--no-cache-timing", action="store_true", help="skip the feature-cache speed measurement")
    p.add_argument("--device", metavar="DEV", help="cpu | cuda | cuda:N (sets $RKDSC_DEVICE for every step)")
    return p


def cli(argv: list[str] | None = None) -> int:
    import os

    from rkdsc.common.experiments.evaluate import parse_snrs
    from rkdsc.common.train.presets import PresetError, load_preset, parse_set_args

    from rkdsc.common.experiments.evaluate import join_negative_values

    args = build_parser().parse_args(join_negative_values(list(sys.argv[1:] if argv is None else argv)))
    from rkdsc.common.train.common import set_threads

    set_threads()  # $RKDSC_THREADS, else torch's default
    if args.device:
        os.environ["RKDSC_DEVICE"] = args.device
    try:
        preset = load_preset(args.preset, parse_set_args(args.set))
        unknown = [b for b in args.baselines if b not in BASELINES]
        if unknown:
            raise ValueError(f"--baselines: unknown baseline {unknown[0]!r}; expected some of {', '.join(BASELINES)}")
        run_pipeline(preset, args.workdir or preset.workdir_default, skip_baselines=args.skip_baselines,
                     baselines=tuple(args.baselines),
                     skip_darts=args.skip_darts, resume=args.resume,
                     snrs_db=parse_snrs(args.snr) if args.snr else None, eval_limit=args.eval_limit,
                     time_cache=not args.no_cache_timing)
    except (PresetError, ValueError, FileNotFoundError) as exc:
        print(f"rkdsc train: error: {exc}", file=sys.stderr)
        return 2
    return 0


def build_default_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rkdsc train-default",
        description="Train the embedded default bundle, one task per preset: `default` (scikit-learn digits, 32 px) and "
                    "`default-shapes` (generated shapes, 40 px), each: teacher, KDL-DARTS search, stage 1, stage 2, "
                    "export (fails if a task exceeds 20 MB), evaluation on its held-back part; then the two bundles "
                    "are merged (rkdsc bundle merge) into --out. This is the command that produced the committed "
                    "deploy/bundle.")
    p.add_argument("--out", default="deploy/bundle", metavar="DIR", help="bundle directory to write (default deploy/bundle)")
    p.add_argument("--workdir", metavar="DIR", help="work directory of the first preset (default: its workdir_default; "
                                                    "the others train in DIR/../<preset name>)")
    p.add_argument("--preset", action="append", metavar="NAME", dest="presets",
                   help=f"train only these presets, in this task order (repeatable; default: {', '.join(DEFAULT_PRESETS)})")
    p.add_argument("--resume", action="store_true", help="skip finished steps, continue interrupted ones")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="override a preset value (for experiments; the committed bundle uses none)")
    p.add_argument("--device", metavar="DEV", help="cpu | cuda | cuda:N")
    return p


def cli_default(argv: list[str] | None = None) -> int:
    import os

    from rkdsc.common.bundle.manifest import BundleError
    from rkdsc.common.train.presets import PresetError

    args = build_default_parser().parse_args(argv)
    from rkdsc.common.train.common import set_threads

    set_threads()  # $RKDSC_THREADS, else torch's default
    if args.device:
        os.environ["RKDSC_DEVICE"] = args.device
    try:
        train_default(args.out, args.workdir, resume=args.resume, sets=args.set,
                      presets=tuple(args.presets or DEFAULT_PRESETS))
    except (PresetError, ValueError, FileNotFoundError, RuntimeError, BundleError) as exc:
        print(f"rkdsc train-default: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
