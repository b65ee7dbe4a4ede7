#!/usr/bin/env python
"""Generate docs/topology.md, the topology TOML reference, from the config model itself.

    python scripts/gen_topology_doc.py          # rewrite docs/topology.md
    python scripts/gen_topology_doc.py --check  # exit 1 when the committed file is stale,
                                                # or when a config field has no description

Every key of the topology is a field of the pydantic schema classes in
``common/config.py`` (``Config``, ``BundleSection``, ``ServerConfig``, ``BaseStationConfig``,
``TransmitterConfig``). For each field this reads its name, type, default and range from the
class (the ``Annotated`` metadata: ``Field(ge=..., le=...)``, ``one_of`` choices), the unit
from its name (``_db``, ``_ms``, ``_s``, ``_hz``, ``_bytes``), and its description from the
trailing ``# comment`` on the field's line in the source (plus comment-only lines right after
it). A field without a comment is an error, so the reference cannot silently miss a key.
``tests/test_topology_doc.py`` runs ``--check``.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import difflib
import inspect
import io
import sys
import textwrap
import tokenize
import typing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "topology.md"

# (TOML table, schema class name, what the table is)
SECTIONS = [
    ("(top level)", "Config", "keys outside any table"),
    ("[bundle]", "BundleSection", "the model bundle every service loads"),
    ("[server]", "ServerConfig", "the edge server (`rkdsc server`)"),
    ("[basestation]", "BaseStationConfig", "the base-station relay (`rkdsc basestation`)"),
    ("[[transmitters]]", "TransmitterConfig", "one table per edge device (`rkdsc edge --id ID`); the relay "
                                              "keeps one link per entry"),
    ("[transmitters.medium]", "DeviceMediumConfig", "a transmitter's place in the shared medium (used only with "
                                                    "`[medium]`; docs/medium.md)"),
    ("[[fleets]]", "FleetConfig", "groups of devices by template (`rkdsc fleet --fleet NAME`), expanded into "
                                  "transmitters after the `[[transmitters]]` entries; `medium` is a "
                                  "`[transmitters.medium]` table for every device (docs/fleets.md)"),
    ("[medium]", "MediumConfig", "the base station as a shared wireless medium with emulated time (optional; "
                                 "unset = independent links; docs/medium.md)"),
    ("[tls]", "TLSConfig", "TLS on every gRPC hop, certificates and tokens (optional; unset = plaintext; "
                           "docs/security.md)"),
    ("[metrics]", "MetricsConfig", "where and how /metrics is served (optional; docs/security.md)"),
]
UNITS = (("_dbm", "dBm"), ("_ghz", "GHz"), ("_per_s", "1/s"), ("_bps", "bit/s"), ("_mps", "m/s"),
         ("_deg", "deg"), ("_m", "m"), ("_db", "dB"), ("_ms", "ms"), ("_s", "s"), ("_hz", "Hz"), ("_bytes", "bytes"))


class DocError(RuntimeError):
    """The config model cannot be documented (names the field)."""


def _config_module():
    sys.path.insert(0, str(ROOT))
    from rkdsc.common import config

    return config


# ----------------------------------------------------------------------------- source comments

def field_comments(cls: type) -> dict[str, str]:
    """field name -> its trailing comment (and the comment-only lines following it) in the source."""
    source = textwrap.dedent(inspect.getsource(cls))
    tree = ast.parse(source)
    body = tree.body[0].body  # the class body
    field_lines = {}
    for node in body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            field_lines[node.lineno] = (node.target.id, node.end_lineno)
    comments: dict[int, str] = {}
    code_lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER):
            code_lines.add(tok.start[0])
    out: dict[str, str] = {}
    for start, (name, end) in sorted(field_lines.items()):
        parts = [comments[ln] for ln in range(start, end + 1) if ln in comments]
        ln = end + 1
        while ln in comments and ln not in code_lines:  # comment-only continuation lines
            parts.append(comments[ln])
            ln += 1
        out[name] = " ".join(p for p in parts if p)
    return out


# ----------------------------------------------------------------------------- types

def _describe_type(tp: Any, config) -> tuple[str, str]:
    """(type text, range text) of an annotation."""
    from rkdsc.common import schema

    optional = False
    if typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional, tp = True, args[0]
    base, meta = tp, []
    if typing.get_origin(tp) is typing.Annotated:
        base, *meta = typing.get_args(tp)
    bounds: list[str] = []
    name = {int: "integer", float: "number", str: "string", bool: "boolean"}.get(base, getattr(base, "__name__", str(base)))
    if base is Path:
        name = "path"
    for m in meta:
        for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            items = getattr(m, "metadata", None) or [m]
            for item in items:
                v = getattr(item, attr, None)
                if v is not None and not isinstance(v, bool):
                    bounds.append(f"{sym} {v:g}" if isinstance(v, float) else f"{sym} {v}")
        func = getattr(m, "func", None)
        if func is not None:
            if func is getattr(config, "_path", None):
                name = "path"
            elif func is getattr(config, "_hostport", None):
                name = "host:port"
            elif func is getattr(config, "_transmitter_id", None):
                name = "string (no spaces, <= 128 characters)"
            elif func is getattr(schema, "_non_empty", None):
                name = "non-empty string"
            elif func.__name__ == "check" and func.__closure__:
                choices = [c.cell_contents for c in func.__closure__ if isinstance(c.cell_contents, tuple)]
                if choices:
                    name = "one of " + ", ".join(f"`{c}`" for c in choices[0])
    if typing.get_origin(base) is list:
        inner = typing.get_args(base)[0]
        plain = typing.get_args(inner)[0] if typing.get_origin(inner) is typing.Annotated else inner
        name = (f"array of {getattr(inner, '__name__', inner)} tables" if dataclasses.is_dataclass(plain)
                else "array of arrays" if typing.get_origin(plain) is list else "array")
    rng = _range_text(bounds)
    if optional:
        name += " (optional)"
    return name, rng


def _range_text(bounds: list[str]) -> str:
    lo = next((b for b in bounds if b.startswith(">")), None)
    hi = next((b for b in bounds if b.startswith("<")), None)
    if lo and hi and lo.startswith(">=") and hi.startswith("<="):
        return f"{lo[3:]} .. {hi[3:]}"
    return ", ".join(b for b in (lo, hi) if b)


def _unit(name: str) -> str:
    for suffix, unit in UNITS:
        if name.endswith(suffix):
            return unit
    return ""


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        v = f.default
    elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        v = f.default_factory()  # type: ignore[misc]
        if dataclasses.is_dataclass(v):
            return "(table)"
        if v == []:
            return "none"
    else:
        return "**required**"
    if v is None:
        return "unset"
    if isinstance(v, Path):
        return f'`"{v}"`'
    if isinstance(v, str):
        return f'`"{v}"`'
    if isinstance(v, bool):
        return f"`{str(v).lower()}`"
    return f"`{v!r}`"


def _table_of(tp: Any) -> type | None:
    """The schema class of a field that is a table ([x]) or an array of tables ([[x]])."""
    if typing.get_origin(tp) is typing.Union:  # Optional[Table]: an optional table
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    if typing.get_origin(tp) is list:
        tp = typing.get_args(tp)[0]
    return tp if isinstance(tp, type) and dataclasses.is_dataclass(tp) else None


def entries() -> list[dict[str, Any]]:
    """One dict per TOML key: section, key, type, unit, default, range, description. DocError when a
    key has no description."""
    config = _config_module()
    rows = []
    missing = []
    for section, cls_name, _ in SECTIONS:
        cls = getattr(config, cls_name)
        hints = typing.get_type_hints(cls, include_extras=True)
        comments = field_comments(cls)
        for f in dataclasses.fields(cls):
            if not f.init:  # filled in after loading, not a TOML key
                continue
            tp, rng = _describe_type(hints[f.name], config)
            desc = comments.get(f.name, "")
            table = _table_of(hints[f.name])
            if table is not None:  # a table of its own: described by its section below
                sec = next(s for s in SECTIONS if s[1] == table.__name__)
                tp, desc = ("array of tables" if sec[0].startswith("[[") else "table"), desc or f"{sec[2]}: see `{sec[0]}`"
            if not desc:
                missing.append(f"{cls_name}.{f.name}")
            rows.append({"section": section, "class": cls_name, "key": f.name, "type": tp, "unit": _unit(f.name),
                         "default": _default(f), "range": rng, "description": desc})
    if missing:
        raise DocError("config fields without a description (add a trailing # comment in common/config.py): "
                       + ", ".join(missing))
    return rows


# ----------------------------------------------------------------------------- the document

HEAD = """# Topology file reference

<!-- GENERATED by scripts/gen_topology_doc.py from the schema classes of common/config.py: do not
edit by hand; change the field (or its trailing comment) there and run
`.venv/bin/python scripts/gen_topology_doc.py`. tests/test_topology_doc.py fails when this file is stale. -->

One TOML file drives every service: `rkdsc server`, `rkdsc basestation`, `rkdsc edge` and
`rkdsc demo` all take `--config FILE` (the default topology is `deploy/topology.toml`). It is
read by `rkdsc.common.config.load_config(path)`; a bad value stops the service with exit status
2 and a message naming the key, e.g.
`transmitters[1].fading: expected one of awgn, rayleigh, rayleigh_fast, rician, got 'foo'`.
Unknown keys are errors too.

## Paths and `root`

- `root` is relative to **the folder of the TOML file** (default: that folder). Every other
  relative path (`bundle.path`, `transmitters[i].images`) is relative to `root`.
  `deploy/topology.toml` sets `root = ".."`, so its paths read from the repository root.
- **Copying a topology file elsewhere changes what its relative paths mean**: a copy of
  `deploy/topology.toml` in `/tmp/` would look for `/bundle` and `/runs/samples/...`. In a
  copied file set `root` to an absolute path (e.g. the repository), or use absolute paths.
- A transmitter without `images` reads `<root>/runs/samples/<task>`; `rkdsc demo` generates
  that folder for the embedded tasks `digits` and `shapes` when it is missing (`rkdsc samples
  [--task shapes]`), at the task's input size in the bundle. Each transmitter names its `task`;
  the tasks of one bundle may differ in input size and symbols per image. Image folders hold one
  sub-folder per class, named like the bundle's class names (`rkdsc bundle info`); images in
  other folders are sent without a label.

## Endpoints from the environment

Only endpoints come from the environment; they override the file:

| variable | overrides | used by |
|---|---|---|
| `RKDSC_SERVER_BIND` | `server.host` / `server.port` (host:port) | server |
| `RKDSC_SERVER_METRICS_PORT` | `server.metrics_port` | server |
| `RKDSC_SERVER_ADDR` | `basestation.server_addr` | relay |
| `RKDSC_RELAY_BIND` | `basestation.host` / `basestation.port` (host:port) | relay |
| `RKDSC_RELAY_METRICS_PORT` | `basestation.metrics_port` | relay |
| `RKDSC_RELAY_ADDR` | where edge devices and `rkdsc link` find the relay (default: `basestation.host:port`, `0.0.0.0` read as `127.0.0.1`) | edge, `rkdsc link` |

## SNR, path gain, fading

The channel a frame sees is set per link on the relay: SNR is `Es/N0` per complex symbol in
dB, the effective SNR is `snr_db + path_gain_db`, and `fading` picks the channel model
(`awgn`; `rayleigh` block fading, one `h` per image; `rayleigh_fast`, one `h` per symbol;
`rician` block fading with K factor `rician_k`, `E|h|^2 = 1` for every K). All of them, and the
link's seed, can be changed while edges stream: `rkdsc link set ID --snr -30` (see
[user-guide.md](user-guide.md#5-changing-a-link-while-edges-stream)).

"""

EXAMPLE = """
## Example

```toml
root = ".."                       # this file lives in deploy/: paths below read from the repo root

[bundle]
path = "deploy/bundle"

[server]
port = 50051
max_batch = 32

[basestation]
port = 50052
server_addr = "127.0.0.1:50051"

[[transmitters]]
id = "edge-near"
snr_db = 20.0
fading = "awgn"
images = "runs/samples/digits"

[[transmitters]]
id = "edge-los"
snr_db = 5.0
fading = "rician"
rician_k = 6.0                    # linear K factor (LOS / scattered power)
seed = 3
```
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|") if text else ""


def render() -> str:
    rows = entries()
    out = [HEAD]
    for section, cls_name, what in SECTIONS:
        out.append(f"## `{section}`" if not section.startswith("(") else "## Top level")
        out.append("")
        out.append(f"{what[0].upper() + what[1:]} (`rkdsc.common.config.{cls_name}`).")
        out.append("")
        out.append("| key | type | unit | default | range | description |")
        out.append("|---|---|---|---|---|---|")
        for r in (r for r in rows if r["class"] == cls_name):
            out.append(f"| `{r['key']}` | {_cell(r['type'])} | {r['unit']} | {_cell(r['default'])} | "
                       f"{_cell(r['range'])} | {_cell(r['description'])} |")
        out.append("")
    out.append(EXAMPLE.lstrip("\n"))
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Generate docs/topology.md from common/config.py.")
    p.add_argument("--check", action="store_true", help="exit 1 when docs/topology.md is stale (writes nothing)")
    p.add_argument("--out", default=str(DOC), help=f"where to write (default {DOC.relative_to(ROOT)})")
    args = p.parse_args(argv)
    try:
        text = render()
    except DocError as exc:
        print(f"gen_topology_doc: error: {exc}", file=sys.stderr)
        return 1
    out = Path(args.out)
    if args.check:
        current = out.read_text(encoding="utf-8") if out.is_file() else ""
        if current != text:
            diff = difflib.unified_diff(current.splitlines(), text.splitlines(), str(out), "generated", lineterm="")
            print("\n".join(list(diff)[:60]), file=sys.stderr)
            print(f"gen_topology_doc: {out} is stale: run .venv/bin/python scripts/gen_topology_doc.py",
                  file=sys.stderr)
            return 1
        print(f"{out} is up to date")
        return 0
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
