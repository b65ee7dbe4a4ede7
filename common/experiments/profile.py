"""``rkdsc profile``: Table II, encoder complexity and per-image encode latency of every method.

One row per (architecture source, method); the profiled module is the method's edge part built
through ``rkdsc.common.models.registry`` from an ``ArchSpec`` (the model configs: StudentConfig,
depths, CATConfig, TeacherConfig) with random weights. Columns: parameters (with / without
the CAT), GFLOPs (2 per multiply-accumulate), median ms per image with torch and onnxruntime
(``rkdsc.common.experiments.timing``; equal thread counts; batch 1 and a large batch), torch on
CUDA when available, the paper's IoT estimate ``t_CPU * 871.49 / 32`` (``iot_ms``) and the same
with this machine's matmul GFLOPS (``iot_scaled_ms``), and the transmitted feature dimension.

Sources: ``--preset NAME`` (its configs and ``search.depths``); none: the paper scale (224x224,
Table I widths, depths [1,2,2,2]; T-DeepSC / RTSC at their Table II sizes, RTSC resizing to its
native 32x32); ``--workdir DIR`` (the preset of its stage-2 model.json or
results.json, the KDL-DARTS depths, the trained architecture of stage2/*/model.json, and its
exported bundles timed with onnxruntime); ``--bundle DIR`` (onnxruntime-only rows).
``--depths`` / ``--input-size`` / ``--compression-ratio`` / ``--teacher`` override.

    rkdsc profile --preset cifar10-cpu --skip-teacher --out runs/profile.json
    rkdsc profile --methods t-deepsc,rtsc                           # the two baselines, Table II sizes
    rkdsc profile --depths 3 4 4 1 --compression-ratio 0.8          # paper scale, 224x224
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from rkdsc.common.cliargs import int_list, str_list
from rkdsc.common.experiments.timing import (export_edge_onnx, matmul_gflops, time_ort, time_torch,
                                             time_torch_interleaved)

PAPER_CPU_GFLOPS = 871.49  # the paper's CPU (i9-14900KF), measured by its authors
PI_GFLOPS = 32.0  # Raspberry Pi 4 B peak (CPU-Monkey), as in the paper

# Table II of the paper (GPU in microseconds, CPU / IoT in ms per image).
PAPER_TABLE_II = [
    {"method": "rkd-sc", "dataset": "CIFAR10", "params_m": 5.21, "gflops": 0.524, "gpu_us": 30.92, "cpu_ms": 3.90, "iot_ms": 106.21, "feature_dim": 102},
    {"method": "rkd-sc", "dataset": "CIFAR100", "params_m": 5.91, "gflops": 0.696, "gpu_us": 40.38, "cpu_ms": 4.67, "iot_ms": 127.18, "feature_dim": 409},
    {"method": "rkd-sc", "dataset": "ImageNet", "params_m": 5.92, "gflops": 0.711, "gpu_us": 40.41, "cpu_ms": 4.81, "iot_ms": 130.99, "feature_dim": 460},
    {"method": "jscc-student", "dataset": "CIFAR10", "params_m": 1.61, "gflops": 0.519, "gpu_us": 21.93, "cpu_ms": 3.87, "iot_ms": 105.39, "feature_dim": 512},
    {"method": "jscc-student", "dataset": "CIFAR100", "params_m": 2.31, "gflops": 0.689, "gpu_us": 28.43, "cpu_ms": 4.56, "iot_ms": 124.18, "feature_dim": 512},
    {"method": "jscc-student", "dataset": "ImageNet", "params_m": 2.32, "gflops": 0.704, "gpu_us": 28.57, "cpu_ms": 4.61, "iot_ms": 125.54, "feature_dim": 512},
    {"method": "jscc-teacher", "dataset": "any", "params_m": 87.85, "gflops": 17.587, "gpu_us": 218.15, "cpu_ms": 38.88, "iot_ms": 1058.86, "feature_dim": 512},
    {"method": "t-deepsc", "dataset": "any", "params_m": 8.90, "gflops": 2.266, "gpu_us": 89.34, "cpu_ms": 5.53, "iot_ms": 150.60, "feature_dim": 10},
    {"method": "rtsc", "dataset": "any", "params_m": 0.72, "gflops": 0.071, "gpu_us": 4.86, "cpu_ms": 0.75, "iot_ms": 20.42, "feature_dim": 512},
]


def iot_ms(cpu_ms: float, cpu_gflops: float = PAPER_CPU_GFLOPS, iot_gflops: float = PI_GFLOPS) -> float:
    """The paper's IoT estimate: t_IoT = t_CPU * GFLOPS_CPU / GFLOPS_Pi (default 871.49 / 32)."""
    return float(cpu_ms) * float(cpu_gflops) / float(iot_gflops)


# ----------------------------------------------------------------------------- specs

# profiled without --methods; the T-DeepSC / RTSC rows are asked for by name or with --methods all
DEFAULT_METHODS = ("rkd-sc", "jscc-student", "jscc-teacher")


def _methods() -> tuple[str, ...]:
    from rkdsc.common.models.registry import method_names

    return method_names()


def _student_config(**kw):
    from rkdsc.common.models.student import StudentConfig

    return StudentConfig(**kw)


def _cat_config(**kw):
    from rkdsc.common.models.cat import CATConfig

    return CATConfig(**kw)


def _teacher_config(**kw):
    from rkdsc.common.models.spec import TeacherConfig

    return TeacherConfig(**kw)


@dataclass
class ArchSpec:
    """What to profile for one source (preset, explicit flags, or a work dir): the model configs."""
    label: str  # row label (preset name, "paper-scale", work dir name)
    dataset: str = ""  # data set of the preset ("cifar10", "tinyimagenet", ...; "" = unknown)
    student: StudentConfig = field(default_factory=lambda: _student_config(input_size=224))  # paper scale
    depths: list[int] = field(default_factory=lambda: [1, 2, 2, 2])  # blocks per layer (Table I)
    cat: CATConfig = field(default_factory=_cat_config)  # CAT codec (compression ratio 0.8)
    teacher: TeacherConfig = field(default_factory=_teacher_config)  # the paper's CLIP ViT-B/16
    tdeepsc: Any = None  # TDeepSCConfig of the t-deepsc row (None: the paper size at input_size)
    rtsc: Any = None  # RTSCConfig of the rtsc row (None: the paper size; runs at 32 px whatever the input)
    bundles: dict[str, str] = field(default_factory=dict)  # method -> bundle dir (work dir source)

    @property
    def input_size(self) -> int:
        return self.student.input_size

    def model_spec(self, method: str) -> ModelSpec:
        """The ModelSpec of ``method`` on this architecture (max_depth widened to the depths)."""
        from rkdsc.common.models.registry import get_method
        from rkdsc.common.models.spec import ModelSpec

        m = get_method(method).name
        if m in ("t-deepsc", "rtsc"):  # their own encoders: no student, CAT or teacher
            from rkdsc.common.models.rtsc import RTSCConfig
            from rkdsc.common.models.tdeepsc import TDeepSCConfig

            if m == "t-deepsc":
                cfg = self.tdeepsc or TDeepSCConfig.for_input(self.input_size)
                if cfg.input_size != self.input_size:
                    cfg = dataclasses.replace(TDeepSCConfig.for_input(self.input_size), **{
                        k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("input_size", "patch_size")})
            else:
                cfg = self.rtsc or RTSCConfig()
            return ModelSpec(method=m, feature_dim=cfg.n_values, **{"tdeepsc" if m == "t-deepsc" else "rtsc": cfg})
        student = dataclasses.replace(self.student, max_depth=max(self.student.max_depth, max(self.depths)))
        return ModelSpec(method=m, feature_dim=self.student.feature_dim, depths=list(self.depths),
                         student=student if m != "jscc-teacher" else None, cat=self.cat if m == "rkd-sc" else None,
                         teacher=self.teacher if m == "jscc-teacher" else None)


def spec_from_preset(preset: Any, label: str | None = None) -> ArchSpec:
    """ArchSpec from a loaded Preset, or the dict of one (``Preset.to_dict()``, e.g. model.json's
    ``preset_config``): its student and CAT configs, ``search.depths``, data set and teacher."""
    if isinstance(preset, dict):
        from rkdsc.common.train.presets import preset_from_dict

        preset = preset_from_dict(preset, name=str(preset.get("name", "preset")))
    from rkdsc.common.models.spec import PAPER_TEACHER, TeacherConfig

    t = preset.teacher
    spec = ArchSpec(label=label or str(preset.name), dataset=str(preset.data.dataset or ""),
                    student=preset.student_config(), cat=preset.cat_config(),
                    teacher=TeacherConfig(name=str(t.name or PAPER_TEACHER), img_size=int(t.img_size) if t.img_size else None,
                                          feature_dim=int(t.feature_dim), timm_kwargs=dict(t.timm_kwargs or {})))
    if preset.search.depths:
        spec.depths = [int(d) for d in preset.search.depths]
    spec.tdeepsc, spec.rtsc = preset.tdeepsc_config(), preset.rtsc_config()
    return spec


def _load_preset(name_or_path: str) -> Any:
    try:
        from rkdsc.common.train.presets import load_preset
    except ImportError as exc:  # pragma: no cover - presets ship with the training package
        raise SystemExit(f"rkdsc profile: --preset needs rkdsc.common.train.presets ({exc})")
    return load_preset(name_or_path)


def _read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def spec_from_workdir(workdir: str | Path) -> ArchSpec:
    """ArchSpec of a pipeline work dir: its preset (the stage-2 model.json's ``preset_config``, else
    the name in results.json), the KDL-DARTS depths, and the trained architecture of the stage-2
    model.json when there is one."""
    from rkdsc.common.models.spec import read_model_spec

    workdir = Path(workdir)
    results = _read_json(workdir / "results.json") if (workdir / "results.json").is_file() else {}
    preset = results.get("preset")
    trained = None
    for model_json in sorted((workdir / "stage2").glob("*/model.json")):
        doc = _read_json(model_json)
        trained = read_model_spec(doc, "rkd-sc")
        if isinstance(doc.get("preset_config"), dict):
            preset = doc["preset_config"]  # the exact preset of the run, --set overrides included
        break
    spec = ArchSpec(label=workdir.name)
    if isinstance(preset, (dict, str)) and preset:
        try:
            spec = spec_from_preset(preset if isinstance(preset, dict) else _load_preset(preset), label=workdir.name)
        except Exception:  # noqa: BLE001 - an unknown preset still leaves the arch.json / model.json
            pass
    for cand in (workdir / "search-kdl-darts" / "arch.json", workdir / "arch.json"):
        if cand.is_file():
            spec.depths = [int(d) for d in _read_json(cand)["depths"]]
            break
    if trained is not None and trained.student is not None and trained.cat is not None:
        spec.student, spec.depths, spec.cat = trained.student, list(trained.depths), trained.cat
    ratio = results.get("compression_ratio")
    if ratio is not None:
        spec.cat = dataclasses.replace(spec.cat, compression_ratio=float(ratio))
    for method in _methods():
        b = workdir / "bundles" / method
        if (b / "manifest.json").is_file():
            spec.bundles[method] = str(b)
    return spec


# ----------------------------------------------------------------------------- models

def build_encoder(method: str, spec: ArchSpec):
    """(edge module (image, snr_db) -> transmitted values, {"encoder", "student", "cat_encoder"} params),
    built through the method registry with random weights."""
    from rkdsc.common.models import count_params
    from rkdsc.common.models.registry import get_method

    edge = get_method(method).edge(spec.model_spec(method))
    encoder = getattr(edge, "student", None) or edge.encoder
    cat = getattr(edge, "cat_encoder", None)
    n_enc = count_params(encoder)
    return edge, {"encoder": count_params(edge) if cat is not None else n_enc, "student": n_enc,
                  "cat_encoder": count_params(cat) if cat is not None else 0}


# ----------------------------------------------------------------------------- profiling

@dataclass
class ProfileOptions:
    batches: tuple[int, ...] = (1, 64)  # batch sizes to time (first = single-image latency)
    threads: int = 0  # torch and onnxruntime intra-op threads (0: torch's default)
    warmup: int = 3  # untimed runs before timing
    repeats: int = 20  # at most this many timed runs per measurement
    budget_s: float = 3.0  # stop timing a measurement after this long (>= 3 runs)
    teacher_batches: tuple[int, ...] | None = None  # batch sizes for the teacher (default: batches)
    gpu: bool = True  # time on CUDA when available
    ort: bool = True  # time with onnxruntime (exports an ONNX file per method)
    interleave_rounds: int = 10  # torch CPU batch-1 times of one source's methods re-timed in alternation (0: off)


def profile_method(method: str, spec: ArchSpec, opts: ProfileOptions, tmp: Path, gflops_here: float,
                   log: Callable[[str], None] = print, modules: dict[str, Any] | None = None) -> dict:
    """One Table II row; the encoder it built is left in ``modules[method]`` when a dict is given."""
    import torch

    from rkdsc.common.models import count_flops

    threads = opts.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    module, params = build_encoder(method, spec)
    module.eval()
    if modules is not None:
        modules[method] = module
    with torch.no_grad():
        img = torch.zeros(1, 3, spec.input_size, spec.input_size)
        snr = torch.full((1,), 10.0)
        out_dim = int(module(img, snr).shape[-1])
        flops = count_flops(module, img, snr)
    batches = opts.teacher_batches if (method == "jscc-teacher" and opts.teacher_batches) else opts.batches
    row: dict[str, Any] = {
        "method": method, "source": spec.label, "dataset": spec.dataset, "input_size": spec.input_size,
        "depths": list(spec.depths) if method in ("rkd-sc", "jscc-student") else None,
        "teacher": spec.teacher.name if method == "jscc-teacher" else None,
        "compression_ratio": spec.cat.compression_ratio if method == "rkd-sc" else None,
        "params": params, "params_m": params["encoder"] / 1e6,
        "params_without_cat_m": params["student"] / 1e6,
        "flops": flops, "gflops": flops / 1e9, "gmacs": flops / 2e9, "feature_dim": out_dim, "symbols_per_image": (out_dim + 1) // 2,
        "threads": threads, "latency_ms": {}, "notes": [],
    }
    lat = row["latency_ms"]
    for b in batches:
        log(f"  {method} [{spec.label}] torch cpu batch {b} ...")
        lat[f"torch_cpu_b{b}"] = time_torch(module, spec.input_size, b, "cpu", opts.warmup, opts.repeats, opts.budget_s)
    if opts.ort:
        bundle = spec.bundles.get(method)
        onnx_path: Path | None = None
        if bundle:
            try:
                from rkdsc.common.bundle import load_bundle

                bdl = load_bundle(bundle)
                onnx_path = bdl.component_path(bdl.task().edge)
                row["notes"].append(f"onnxruntime times the exported bundle {bundle}")
                row["bundle_params"] = int(bdl.component(bdl.task().edge).get("params", 0))
            except Exception as exc:  # noqa: BLE001 - fall back to a fresh export
                row["notes"].append(f"bundle {bundle} unusable ({exc}); exported a fresh ONNX file")
        if onnx_path is None:
            onnx_path = export_edge_onnx(module, spec.input_size, tmp / f"{spec.label}-{method}.onnx")
        for b in batches:
            log(f"  {method} [{spec.label}] onnxruntime cpu batch {b} ...")
            lat[f"ort_cpu_b{b}"] = time_ort(onnx_path, spec.input_size, b, threads, opts.warmup, opts.repeats,
                                            opts.budget_s)
    if opts.gpu and torch.cuda.is_available():
        for b in batches:
            log(f"  {method} [{spec.label}] torch cuda batch {b} ...")
            lat[f"torch_gpu_b{b}"] = time_torch(module, spec.input_size, b, "cuda", max(opts.warmup, 10),
                                                max(opts.repeats, 50), opts.budget_s)
    b0 = batches[0]
    cpu_ms = lat[f"torch_cpu_b{b0}"]["per_image_ms"]
    row["cpu_ms"] = cpu_ms  # torch, batch b0 (the paper's single-image PyTorch CPU time)
    row["cpu_ort_ms"] = lat[f"ort_cpu_b{b0}"]["per_image_ms"] if f"ort_cpu_b{b0}" in lat else None
    row["gpu_us"] = lat[f"torch_gpu_b{b0}"]["per_image_ms"] * 1e3 if f"torch_gpu_b{b0}" in lat else None
    row["iot_ms"] = iot_ms(cpu_ms)  # paper formula, 871.49 / 32
    row["iot_scaled_ms"] = iot_ms(cpu_ms, gflops_here)  # this machine's GFLOPS / 32
    return row


def machine_info(threads: int, gflops_here: float) -> dict:
    import onnxruntime
    import torch

    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "threads": threads, "python": platform.python_version(),
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "cuda": bool(torch.cuda.is_available()), "gpu": None, "matmul_gflops": gflops_here,
            "load_avg_1m": round(os.getloadavg()[0], 2)}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    info["processor"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    if info["cuda"]:
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _interleave_b0(rows: list[dict], spec: ArchSpec, opts: ProfileOptions, gflops_here: float,
                   modules: dict[str, Any], log: Callable[[str], None] = print) -> None:
    """Re-time the torch CPU single-image latency of the rows of one source in alternation and make it
    the rows' ``cpu_ms`` (the sequential measurement stays as ``torch_cpu_b<N>_sequential``)."""
    b0 = opts.batches[0]
    rows = [r for r in rows if f"torch_cpu_b{b0}" in r["latency_ms"]]
    if opts.interleave_rounds < 1 or len(rows) < 2:
        return
    import torch

    torch.set_num_threads(opts.threads or torch.get_num_threads())
    log(f"  {', '.join(r['method'] for r in rows)} [{spec.label}] torch cpu batch {b0}, "
        f"interleaved over {opts.interleave_rounds} rounds ...")
    timed = time_torch_interleaved({r["method"]: modules[r["method"]] for r in rows}, spec.input_size, b0,
                                   opts.warmup, opts.repeats, opts.budget_s, opts.interleave_rounds)
    for r in rows:
        lat = r["latency_ms"]
        lat[f"torch_cpu_b{b0}_sequential"] = lat[f"torch_cpu_b{b0}"]
        lat[f"torch_cpu_b{b0}"] = timed[r["method"]]
        r["cpu_ms"] = timed[r["method"]]["per_image_ms"]
        r["iot_ms"] = iot_ms(r["cpu_ms"])
        r["iot_scaled_ms"] = iot_ms(r["cpu_ms"], gflops_here)


def profile(specs: list[ArchSpec], methods: list[str], opts: ProfileOptions, bundles: list[str] | None = None,
            log: Callable[[str], None] = print) -> dict:
    """Profile every (spec, method); returns the JSON document (see module docstring)."""
    import torch

    threads = opts.threads or torch.get_num_threads()
    notes = []
    load = os.getloadavg()[0]
    if threads > 1 and load > (os.cpu_count() or 1):
        notes.append(f"load average {load:.1f} exceeds the {os.cpu_count()} CPUs: multi-threaded timings are inflated "
                     f"by contention (torch's intra-op threads wait on descheduled peers); --threads 1 is more stable")
        log("warning: " + notes[-1])
    gflops_here = matmul_gflops(threads)
    rows: list[dict] = []
    teacher_done: set[tuple] = set()
    with tempfile.TemporaryDirectory(prefix="rkdsc-profile-") as tmpdir:
        tmp = Path(tmpdir)
        for spec in specs:
            modules: dict[str, Any] = {}  # this spec's encoders, timed again side by side below
            for method in methods:
                if method == "jscc-teacher":
                    key = (spec.teacher.name, spec.teacher.img_size, json.dumps(spec.teacher.timm_kwargs, sort_keys=True))
                    if key in teacher_done and not spec.bundles.get(method):
                        continue  # dataset independent: profile each teacher once
                    teacher_done.add(key)
                log(f"profiling {method} [{spec.label}] at {spec.input_size}x{spec.input_size} ...")
                rows.append(profile_method(method, spec, opts, tmp, gflops_here, log, modules))
            _interleave_b0([r for r in rows if r["source"] == spec.label], spec, opts, gflops_here, modules, log)
        for b in bundles or []:
            rows.extend(profile_bundle(b, opts, threads, gflops_here, log))
    return {
        "machine": machine_info(threads, gflops_here),
        "settings": {"batches": list(opts.batches), "teacher_batches": list(opts.teacher_batches or opts.batches),
                     "warmup": opts.warmup, "repeats": opts.repeats, "budget_s": opts.budget_s,
                     "interleave_rounds": opts.interleave_rounds,
                     "statistic": "median over timed runs, divided by the batch size"
                                  + ("; the torch CPU single-image times of one source's methods are timed in "
                                     f"alternation over {opts.interleave_rounds} rounds" if opts.interleave_rounds else "")},
        "iot": {"formula": "t_IoT = t_CPU * GFLOPS_CPU / GFLOPS_Pi",
                "paper_cpu_gflops": PAPER_CPU_GFLOPS, "pi_gflops": PI_GFLOPS,
                "note": ("iot_ms applies the paper's footnote with 871.49 GFLOPS, the peak of the paper's "
                         "CPU (i9-14900KF), to the torch batch-1 CPU time measured here; iot_scaled_ms uses "
                         "this machine's measured matmul GFLOPS instead"),
                "this_machine_gflops": gflops_here},
        "specs": [asdict(s) for s in specs],
        "rows": rows,
        "paper_table_ii": PAPER_TABLE_II,
        "notes": notes,
    }


def profile_bundle(bundle_dir: str, opts: ProfileOptions, threads: int, gflops_here: float,
                   log: Callable[[str], None] = print) -> list[dict]:
    """onnxruntime-only rows for every task of a bundle (no torch model to time)."""
    from rkdsc.common.bundle import load_bundle

    bdl = load_bundle(bundle_dir)
    size = bdl.input.size[0]
    method = str(bdl.manifest.get("provenance", {}).get("method", "bundle"))
    rows = []
    for name, task in bdl.tasks.items():
        lat = {}
        for b in opts.batches:
            log(f"  bundle {bundle_dir} task {name} onnxruntime cpu batch {b} ...")
            lat[f"ort_cpu_b{b}"] = time_ort(bdl.component_path(task.edge), size, b, threads, opts.warmup,
                                            opts.repeats, opts.budget_s)
        params = int(bdl.component(task.edge).get("params", 0))
        cpu_ort = lat[f"ort_cpu_b{opts.batches[0]}"]["per_image_ms"]
        rows.append({"method": method, "source": f"bundle:{bundle_dir}:{name}", "dataset": name, "input_size": size,
                     "depths": None, "teacher": None, "compression_ratio": task.compression_ratio,
                     "params": {"encoder": params, "student": None, "cat_encoder": None},
                     "params_m": params / 1e6, "params_without_cat_m": None, "flops": None, "gflops": None,
                     "feature_dim": task.compact_dim, "symbols_per_image": task.symbols_per_image,
                     "threads": threads, "latency_ms": lat, "cpu_ms": None, "cpu_ort_ms": cpu_ort, "gpu_us": None,
                     "iot_ms": iot_ms(cpu_ort), "iot_scaled_ms": iot_ms(cpu_ort, gflops_here),
                     "notes": ["bundle row: onnxruntime only; the IoT columns use the onnxruntime batch-1 time"]})
    return rows


# ----------------------------------------------------------------------------- output

def _f(v: Any, fmt: str) -> str:
    return "n/a" if v is None else format(v, fmt)


def markdown_table(doc: dict) -> str:
    """Table II layout, measured here, plus large-batch and onnxruntime columns."""
    batches = doc["settings"]["batches"]
    b0, bl = batches[0], batches[-1]
    head = ["Method", "Source", "Input", "Params (M)", "Params w/o CAT (M)", "GFLOPs", "GMACs", "GPU (µs)",
            f"CPU torch b{b0} (ms)", f"CPU ORT b{b0} (ms)"]
    if bl != b0:
        head += [f"CPU torch b{bl} (ms/img)", f"CPU ORT b{bl} (ms/img)"]
    head += ["IoT paper formula (ms)", "IoT scaled (ms)", "Feature dim"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in doc["rows"]:
        lat = r["latency_ms"]

        def per(engine: str, b: int) -> str:
            key = f"{engine}_cpu_b{b}"
            if key in lat:
                return _f(lat[key]["per_image_ms"], ".3f")
            # a row timed at other batch sizes (the teacher's --teacher-batches): its largest one
            own = sorted(int(m.group(1)) for m in (re.fullmatch(rf"{engine}_cpu_b(\d+)", k) for k in lat) if m)
            if b != b0 and own and own[-1] != b0:
                return f"{lat[f'{engine}_cpu_b{own[-1]}']['per_image_ms']:.3f} (b{own[-1]})"
            return "n/a"

        cells = [r["method"], r["source"], str(r["input_size"]), _f(r["params_m"], ".3f"),
                 _f(r["params_without_cat_m"], ".3f"), _f(r["gflops"], ".4f"),
                 _f(None if r.get("gflops") is None else r["gflops"] / 2, ".4f"), _f(r["gpu_us"], ".2f"),
                 per("torch", b0), per("ort", b0)]
        if bl != b0:
            cells += [per("torch", bl), per("ort", bl)]
        cells += [_f(r["iot_ms"], ".2f"), _f(r["iot_scaled_ms"], ".2f"), str(r["feature_dim"])]
        lines.append("| " + " | ".join(cells) + " |")
    m = doc["machine"]
    rounds = doc["settings"].get("interleave_rounds", 0)
    lines.append("")
    for n in doc.get("notes") or []:
        lines.append(f"Note: {n}.")
    lines.append(f"CPU: {m['processor']} ({m['threads']} threads for torch and onnxruntime; measured matmul "
                 f"{m['matmul_gflops']:.1f} GFLOPS; load average {m.get('load_avg_1m', 'n/a')} at the start). GPU: {m['gpu'] or 'none'}. Times are medians per image"
                 + (f"; CPU torch b{b0} of one source's methods timed in alternation over {rounds} rounds" if rounds else "")
                 + ". "
                 f"IoT paper formula = CPU torch b{b0} x {PAPER_CPU_GFLOPS}/{PI_GFLOPS:g} (871.49 GFLOPS is the "
                 f"paper's CPU); IoT scaled = CPU torch b{b0} x {m['matmul_gflops']:.1f}/{PI_GFLOPS:g}. GFLOPs count 2 "
                 f"FLOPs per multiply-accumulate; the paper's GFLOPs column matches MAC counts (its ViT-B/16 "
                 f"teacher: 17.587, i.e. ~17.5 GMACs), so compare it with the GMACs column.")
    return "\n".join(lines)


def paper_table_markdown() -> str:
    lines = ["| Method | Dataset | Params (M) | GFLOPs | GPU (µs) | CPU (ms) | IoT (ms) | Feature dim |",
             "|---|---|---|---|---|---|---|---|"]
    for r in PAPER_TABLE_II:
        lines.append(f"| {r['method']} | {r['dataset']} | {r['params_m']} | {r['gflops']} | {r['gpu_us']} | "
                     f"{r['cpu_ms']} | {r['iot_ms']} | {r['feature_dim']} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    from rkdsc.common.models.spec import PAPER_TEACHER

    methods = _methods()
    p = argparse.ArgumentParser(
        prog="rkdsc profile",
        description="Table II of the paper for every method: encoder parameters (with / without CAT), GFLOPs "
                    "(2 per MAC), per-image encode latency on the CPU with torch and onnxruntime (batch 1 and a "
                    "large batch, equal thread counts), on the GPU when CUDA is available, the paper's IoT "
                    "estimate t_CPU * 871.49 / 32 and the transmitted feature dimension. Without --preset, "
                    "--workdir or --bundle the paper scale (224x224, Table I widths) is profiled.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", action="append", default=[], metavar="NAME",
                   help="preset name or TOML path whose architecture to profile (repeatable)")
    p.add_argument("--workdir", action="append", default=[], metavar="DIR",
                   help="pipeline work dir: KDL-DARTS depths, its preset, and its exported bundles (repeatable)")
    p.add_argument("--bundle", action="append", default=[], metavar="DIR",
                   help="bundle directory profiled with onnxruntime only (repeatable)")
    p.add_argument("--depths", type=int, nargs=4, metavar="D", default=None,
                   help="student depths per layer (overrides the preset / work dir; paper-scale default 1 2 2 2)")
    p.add_argument("--input-size", type=int, default=None, help="input side in pixels (overrides the preset)")
    p.add_argument("--compression-ratio", type=float, default=None,
                   help="CAT compression ratio (overrides the preset; paper-scale default 0.8)")
    p.add_argument("--teacher", default=None,
                   help=f"timm name of the teacher (overrides the preset; paper scale: {PAPER_TEACHER})")
    p.add_argument("--dataset", default=None,
                   help="data-set tag of the rows (cifar10, cifar100, tinyimagenet); the report compares rows "
                        "with the paper's Table II row of this data set (default: the preset's data set)")
    p.add_argument("--methods", default=",".join(m for m in methods if m in DEFAULT_METHODS),
                   help="comma-separated methods among " + ", ".join(methods) + ", or 'all' (every one: adds the "
                        "T-DeepSC / RTSC baselines at their Table II sizes)")
    p.add_argument("--skip-teacher", action="store_true", help="do not profile jscc-teacher (it is slow on a CPU)")
    p.add_argument("--batches", type=int_list(min_value=1, example="1,64"), default=(1, 64),
                   help="comma-separated batch sizes to time; the first is the single-image latency")
    p.add_argument("--teacher-batches", type=int_list(min_value=1, example="1,64"), default=None,
                   help="batch sizes for the teacher (default: --batches)")
    p.add_argument("--threads", type=int, default=0,
                   help="intra-op threads for both torch and onnxruntime (0: torch's default)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs before each measurement")
    p.add_argument("--repeats", type=int, default=20, help="at most this many timed runs per measurement")
    p.add_argument("--budget-s", type=float, default=3.0,
                   help="seconds after which a measurement stops (always at least 3 timed runs)")
    p.add_argument("--interleave-rounds", type=int, default=10,
                   help="re-time the torch CPU single-image latency of one source's methods in alternation over "
                        "this many rounds, so that their ratios survive load from other jobs (0: off)")
    p.add_argument("--no-ort", action="store_true", help="skip the onnxruntime columns (no ONNX export)")
    p.add_argument("--no-gpu", action="store_true", help="skip the GPU column even when CUDA is available")
    p.add_argument("--out", default=None, metavar="FILE.json", help="write the JSON document here")
    p.add_argument("--markdown", default=None, metavar="FILE.md", help="also write the Markdown table here")
    p.add_argument("--quiet", action="store_true", help="print only the table")
    return p


def cli(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.interleave_rounds < 0:
        print(f"rkdsc profile: --interleave-rounds must be >= 0, got {args.interleave_rounds}", file=sys.stderr)
        return 2
    methods = list(_methods()) if args.methods.strip() == "all" else str_list(args.methods)
    bad = [m for m in methods if m not in _methods()]
    if bad:
        print(f"rkdsc profile: --methods: unknown {bad}; choose from {list(_methods())}", file=sys.stderr)
        return 2
    if args.skip_teacher:
        methods = [m for m in methods if m != "jscc-teacher"]
    specs: list[ArchSpec] = []
    for name in args.preset:
        specs.append(spec_from_preset(_load_preset(name), label=Path(name).stem if name.endswith(".toml") else name))
    for wd in args.workdir:
        if not Path(wd).is_dir():
            print(f"rkdsc profile: --workdir {wd}: no such directory", file=sys.stderr)
            return 2
        specs.append(spec_from_workdir(wd))
    if not specs and not args.bundle:
        specs.append(ArchSpec(label="paper-scale"))
    for s in specs:
        if args.depths:
            s.depths = list(args.depths)
        if args.input_size:
            s.student = dataclasses.replace(s.student, input_size=args.input_size)
        if args.compression_ratio is not None:
            s.cat = dataclasses.replace(s.cat, compression_ratio=args.compression_ratio)
        if args.dataset:
            s.dataset = args.dataset
        if args.teacher:
            s.teacher = _teacher_config(name=args.teacher, feature_dim=s.student.feature_dim)
    opts = ProfileOptions(batches=args.batches, threads=args.threads, warmup=args.warmup, repeats=args.repeats,
                          budget_s=args.budget_s, teacher_batches=args.teacher_batches, gpu=not args.no_gpu,
                          ort=not args.no_ort, interleave_rounds=args.interleave_rounds)
    log = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    doc = profile(specs, methods, opts, bundles=args.bundle, log=log)
    if args.out:  # the measurements first: nothing is lost if the table cannot be rendered
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    table = markdown_table(doc)
    doc["markdown"] = table
    if args.out:
        Path(args.out).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(table + "\n", encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(cli())
