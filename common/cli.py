"""The `rkdsc` command line.

Each subcommand lives next to the code it drives and exposes `cli(argv) -> int` with its own
argparse parser (so `rkdsc X --help` documents every flag). This dispatcher resolves them by
module name only when called: the service subcommands (`edge`, `basestation`, `server`,
`demo`, `bench`) import grpc, and importing `common` must never do that.
"""
from __future__ import annotations

import importlib
import os
import sys

# name -> (module:function, one-line description). Order is the order of `rkdsc --help`.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("rkdsc.common.train.pipeline:cli", "run a whole preset: teacher, searches, RKD stages, baselines, export, evaluation"),
    "train-default": ("rkdsc.common.train.pipeline:cli_default", "train the embedded default bundle (digits + shapes) into deploy/bundle"),
    "search": ("rkdsc.common.train.search:cli", "KDL-DARTS or DARTS architecture search over the Table I space -> arch.json"),
    "distill": ("rkdsc.common.train.distill:cli", "two-stage robust knowledge distillation (stage 1 MSE, stage 2 joint with CAT)"),
    "baseline": ("rkdsc.common.train.baselines:cli", "train the JSCC-student or JSCC-teacher baseline"),
    "export": ("rkdsc.common.train.export:cli", "export a trained work dir to a self-describing ONNX bundle"),
    "evaluate": ("rkdsc.common.experiments.evaluate:cli", "accuracy against SNR for one or more bundles (JSON + plot)"),
    "profile": ("rkdsc.common.experiments.profile:cli", "Table II: parameters, GFLOPs, encode latency (torch / onnxruntime), IoT estimate"),
    "adaptive": ("rkdsc.common.experiments.adaptive:cli", "SNR-adaptive rate: several codecs of one task with a rate policy (build), adaptive vs fixed (eval)"),
    "ablation": ("rkdsc.common.experiments.ablation:cli", "Fig. 8: accuracy at -10 dB against the CAT compression ratio"),
    "report": ("rkdsc.common.experiments.report:cli", "regenerate docs/reproduction.md from training runs"),
    "bundle": ("rkdsc.common.bundle.cli:cli", "inspect (info), check (verify) or combine (merge) bundle directories"),
    "samples": ("rkdsc.common.data.samples:cli", "write the held-back digits, or a preset's held-out split, as a sample image folder"),
    "server": ("rkdsc.server.service:cli", "run the edge server (CAT decoder + semantic decoders)"),
    "basestation": ("rkdsc.basestation.relay:cli", "run the base-station relay (channel per link)"),
    "edge": ("rkdsc.edge.client:cli", "run one edge device on an image folder"),
    "fleet": ("rkdsc.edge.fleet:cli", "run many edge devices (a [[fleets]] entry, or ids) in one process, sharing the models"),
    "demo": ("rkdsc.common.experiments.demo:cli", "start server, relay and every edge of a topology on localhost; write summary.json"),
    "bench": ("rkdsc.common.experiments.bench:cli", "side-by-side benchmarks: in-process vs networked, torch vs onnxruntime, channel cost"),
    "link": ("rkdsc.basestation.admin:cli", "look at / change the relay's links at run time (list, get, set)"),
    "certs": ("rkdsc.common.certs:cli", "write a development CA and TLS certificates (server, relay, admin, every transmitter)"),
    "runs": ("rkdsc.common.experiments.runs:cli", "list training work dirs and demo outputs with their key figures side by side"),
}

BROKEN_PIPE_STATUS = 141  # what a shell reports for a tool ended by SIGPIPE (128 + 13)


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = ["usage: rkdsc <command> [options]", "",
             "RKD-SC semantic-communication emulator: train offline (torch), serve online (onnxruntime + gRPC).",
             "", "commands:"]
    lines += [f"  {name.ljust(width)}  {desc}" for name, (_, desc) in COMMANDS.items()]
    lines += ["", "Run `rkdsc <command> --help` for the options of a command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        from importlib.metadata import version

        print(f"rkdsc {version('rkdsc')}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"rkdsc: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    target = COMMANDS[name][0]
    module_name, func_name = target.split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    try:
        status = int(func(rest) or 0)
        sys.stdout.flush()  # inside the try: a closed pipe often shows only here
    except BrokenPipeError:
        # the reader went away (`rkdsc bundle info | head`): stop quietly, for every subcommand.
        # Point stdout at /dev/null so the interpreter's own flush at exit cannot raise again.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return BROKEN_PIPE_STATUS
    return status


if __name__ == "__main__":
    sys.exit(main())
