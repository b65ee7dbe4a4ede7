"""The Grafana dashboard's PromQL, read rather than trusted (standard library only).

Used by tests/deploy/test_observe.py (no engine: every metric and label a query names must be
one the server and relay registries export) and by deploy/observe_test.sh (with an engine:
every query, Grafana variables substituted, is sent to a real Prometheus that scraped a run).

- ``queries(dashboard)``: every PromQL expression of the dashboard, panel targets (rows and
  nested panels included) and template-variable queries, with where it came from;
- ``analyze(expr)``: a small PromQL tokenizer that tells the metric names of an expression from
  function and aggregation names, keywords, label names, label values (strings), durations,
  numbers and Grafana variables; an unknown function name is an error (a typo);
- ``substitute(expr, dashboard)``: Grafana's variables replaced the way Grafana would for the
  dashboard's defaults (``All`` = the variable's allValue);
- ``python deploy/observe/dashboard.py live URL [--dashboard PATH]``: runs every query against
  the Prometheus at URL (``/api/v1/query``) and fails on an error or an empty result.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

DASHBOARD = Path(__file__).resolve().parent / "grafana" / "dashboards" / "rkdsc.json"

AGGREGATIONS = frozenset({
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk",
    "topk", "quantile", "limitk", "limit_ratio"})
FUNCTIONS = frozenset({
    "abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh",
    "avg_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "cos", "cosh",
    "count_over_time", "day_of_month", "day_of_week", "day_of_year", "days_in_month", "deg", "delta",
    "deriv", "double_exponential_smoothing", "exp", "floor", "histogram_avg", "histogram_count",
    "histogram_fraction", "histogram_quantile", "histogram_stddev", "histogram_stdvar",
    "histogram_sum", "holt_winters", "hour", "idelta", "increase", "info", "irate", "label_join",
    "label_replace", "last_over_time", "ln", "log10", "log2", "mad_over_time", "max_over_time",
    "min_over_time", "minute", "month", "pi", "predict_linear", "present_over_time",
    "quantile_over_time", "rad", "rate", "resets", "round", "scalar", "sgn", "sin", "sinh", "sort",
    "sort_by_label", "sort_by_label_desc", "sort_desc", "sqrt", "stddev_over_time",
    "stdvar_over_time", "sum_over_time", "tan", "tanh", "time", "timestamp", "vector", "year"})
BINARY_KEYWORDS = frozenset({"and", "or", "unless", "bool"})
LABEL_LIST_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
NUMBER_WORDS = frozenset({"inf", "nan"})
# Grafana's built-in variables, with the values used when a query is run outside Grafana
BUILTINS = {"__rate_interval": "1m", "__interval": "10s", "__range": "15m", "__range_s": "900",
            "__interval_ms": "10000"}

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<var>\$\{[A-Za-z_]\w*(?::[^}]*)?\}|\$[A-Za-z_]\w*|\[\[[A-Za-z_]\w*\]\])
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?:(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*)?)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[=<>+\-*/%^@,(){}\[\]:])
""", re.VERBOSE)


class PromQLError(ValueError):
    """An expression this reader cannot account for (unknown function, unbalanced brackets...)."""


@dataclass
class Analysis:
    metrics: set[str] = field(default_factory=set)       # metric (series) names
    labels: set[str] = field(default_factory=set)        # label names in matchers and by/on/... lists
    functions: set[str] = field(default_factory=set)     # functions and aggregations called
    variables: set[str] = field(default_factory=set)     # Grafana variables used ($name, ${name})


def tokenize(expr: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m:
            raise PromQLError(f"cannot read {expr[pos:pos + 20]!r} at {pos} in {expr!r}")
        pos = m.end()
        kind = m.lastgroup
        if kind not in ("ws", "comment"):
            out.append((kind, m.group()))
    return out


def variable_name(token: str) -> str:
    return re.sub(r"^\$\{?|\[\[|\]\]$|(?::[^}]*)?\}$", "", token)


def _unquote(s: str) -> str:
    body = s[1:-1]
    return body if s[0] == "`" else re.sub(r"\\(.)", r"\1", body)


def analyze(expr: str) -> Analysis:
    """Metric names, label names, functions and Grafana variables of one PromQL expression."""
    toks = tokenize(expr)
    a = Analysis()
    a.variables = {variable_name(v) for k, v in toks if k == "var"}
    for k, v in toks:
        if k == "string":
            a.variables |= {variable_name(x) for x in re.findall(r"\$\{[A-Za-z_]\w*(?::[^}]*)?\}|\$[A-Za-z_]\w*|\[\[[A-Za-z_]\w*\]\]", v)}
    stack: list[str] = []
    i = 0

    def peek(j: int) -> tuple[str, str]:
        return toks[j] if j < len(toks) else ("eof", "")

    while i < len(toks):
        kind, val = toks[i]
        ctx = stack[-1] if stack else ""
        if kind == "op" and val in "({[":
            stack.append(val)
            i += 1
            continue
        if kind == "op" and val in ")}]":
            want = {")": "(", "}": "{", "]": "["}[val]
            if not stack or stack.pop() != want:
                raise PromQLError(f"unbalanced {val!r} in {expr!r}")
            i += 1
            continue
        if ctx == "[":                     # ranges, subquery steps: durations and variables only
            i += 1
            continue
        if ctx == "{":                     # label matchers: name op "value" or a quoted metric name
            if kind == "ident":
                op, value = peek(i + 1), peek(i + 2)
                if op[0] != "op" or op[1] not in ("=", "!=", "=~", "!~") or value[0] not in ("string", "var"):
                    raise PromQLError(f"label matcher {val!r} without an operator and a value in {expr!r}")
                if val == "__name__":
                    if op[1] != "=" or value[0] != "string":
                        raise PromQLError(f"only __name__=\"metric\" is understood, in {expr!r}")
                    a.metrics.add(_unquote(value[1]))
                else:
                    a.labels.add(val)
                i += 3
                continue
            if kind == "string" and peek(i + 1)[1] in (",", "}"):   # {"quoted.metric.name"}
                a.metrics.add(_unquote(val))
            i += 1
            continue
        if kind == "ident":
            low = val.lower()
            nxt = peek(i + 1)
            if val in LABEL_LIST_KEYWORDS:
                if nxt == ("op", "("):          # by (a, b): label names up to ")"
                    j = i + 2
                    while peek(j) != ("op", ")"):
                        k2, v2 = peek(j)
                        if k2 == "eof":
                            raise PromQLError(f"unclosed label list after {val!r} in {expr!r}")
                        if k2 == "ident":
                            a.labels.add(v2)
                        elif k2 == "string":
                            a.labels.add(_unquote(v2))
                        elif (k2, v2) != ("op", ","):
                            raise PromQLError(f"{v2!r} in the label list of {val!r} in {expr!r}")
                        j += 1
                    i = j + 1
                    continue
                if val in ("group_left", "group_right"):   # without a label list
                    i += 1
                    continue
                raise PromQLError(f"{val!r} without a label list in {expr!r}")
            if val == "offset":
                j = i + 1
                if peek(j) == ("op", "-"):
                    j += 1
                if peek(j)[0] not in ("number", "var"):
                    raise PromQLError(f"offset without a duration in {expr!r}")
                i = j + 1
                continue
            if val in BINARY_KEYWORDS or low in NUMBER_WORDS:
                i += 1
                continue
            if val in ("start", "end") and i > 0 and toks[i - 1] == ("op", "@"):
                a.functions.add(val)
                i += 1
                continue
            if nxt == ("op", "(") or (val in AGGREGATIONS and nxt[1] in ("by", "without")):
                if val not in FUNCTIONS and val not in AGGREGATIONS:
                    raise PromQLError(f"unknown function {val!r} in {expr!r}")
                a.functions.add(val)
                i += 1
                continue
            a.metrics.add(val)
            i += 1
            continue
        i += 1
    if stack:
        raise PromQLError(f"unclosed {stack[-1]!r} in {expr!r}")
    return a


# ------------------------------------------------------------------ the dashboard
def load(path: Path | str = DASHBOARD) -> dict:
    return json.loads(Path(path).read_text())


def panels(dashboard: dict):
    """Every panel, rows' nested panels included."""
    for p in dashboard.get("panels", []):
        yield p
        yield from p.get("panels", [])


_TEMPLATE_FUNCS = re.compile(r"^\s*(label_values|query_result|metrics|label_names)\s*\((.*)\)\s*$", re.S)


def queries(dashboard: dict) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every template variable of type query."""
    out = []
    for p in panels(dashboard):
        for t in p.get("targets", []):
            if t.get("expr"):
                out.append((f"panel {p.get('id')} {p.get('title')!r} target {t.get('refId')}", t["expr"]))
    for v in dashboard.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, dict) else (q or "")
        m = _TEMPLATE_FUNCS.match(q)
        if not m:
            out.append((f"variable {v['name']}", q))
            continue
        func, args = m.groups()
        if func == "label_values":   # label_values(selector, label) or label_values(label)
            sel, _, label = args.rpartition(",")
            out.append((f"variable {v['name']} (label_values, label {label.strip()})",
                        f"group by ({label.strip()}) ({sel.strip()})" if sel.strip() else
                        f"group by ({label.strip()}) ({{{label.strip()}!=\"\"}})"))
        elif func == "query_result":
            out.append((f"variable {v['name']} (query_result)", args))
        else:
            raise PromQLError(f"variable {v['name']}: {func}() is not checked here")
    return out


def variables(dashboard: dict) -> dict[str, str]:
    """Variable -> the value Grafana uses for the dashboard's default selection."""
    out = dict(BUILTINS)
    for v in dashboard.get("templating", {}).get("list", []):
        cur = v.get("current", {}).get("value")
        if isinstance(cur, list):
            cur = cur[0] if len(cur) == 1 else "(" + "|".join(cur) + ")"
        if cur in ("$__all", None) and v.get("includeAll"):
            cur = v.get("allValue") or ".*"
        if cur is None:
            raise PromQLError(f"variable {v.get('name')}: no default value")
        out[v["name"]] = str(cur)
    return out


def substitute(expr: str, dashboard: dict, overrides: dict[str, str] | None = None) -> str:
    values = {**variables(dashboard), **(overrides or {})}

    def repl(m: re.Match) -> str:
        name = variable_name(m.group())
        if name not in values:
            raise PromQLError(f"undefined variable ${name} in {expr!r}")
        return values[name]

    return re.sub(r"\$\{[A-Za-z_]\w*(?::[^}]*)?\}|\$[A-Za-z_]\w*|\[\[[A-Za-z_]\w*\]\]", repl, expr)


# ------------------------------------------------------------------ live: a real Prometheus
def instant_query(url: str, expr: str, timeout: float = 10.0) -> list[dict]:
    data = urllib.parse.urlencode({"query": expr}).encode()
    with urllib.request.urlopen(f"{url.rstrip('/')}/api/v1/query", data=data, timeout=timeout) as r:
        body = json.loads(r.read().decode())
    if body.get("status") != "success":
        raise PromQLError(f"{expr!r}: {body.get('errorType')}: {body.get('error')}")
    res = body["data"]["result"]
    return res if isinstance(res, list) else [{"metric": {}, "value": res}]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    live = sub.add_parser("live", help="run every dashboard query against a Prometheus")
    live.add_argument("url", help="Prometheus base URL, e.g. http://127.0.0.1:9090")
    live.add_argument("--dashboard", default=str(DASHBOARD))
    live.add_argument("--rate-interval", default="1m", help="value of $__rate_interval (default 1m)")
    sub.add_parser("metrics", help="print the metric names the dashboard's queries use")
    args = ap.parse_args(argv)
    if args.cmd == "metrics":
        names = set()
        for _, q in queries(load()):
            names |= analyze(q).metrics
        print("\n".join(sorted(names)))
        return 0
    dash = load(args.dashboard)
    bad = 0
    for where, q in queries(dash):
        expr = substitute(q, dash, {"__rate_interval": args.rate_interval})
        try:
            res = instant_query(args.url, expr)
        except Exception as exc:  # noqa: BLE001 (report every query, then fail)
            print(f"FAIL {where}: {exc}")
            bad += 1
            continue
        if not res:
            print(f"EMPTY {where}: {expr}")
            bad += 1
        else:
            print(f"ok   {where}: {len(res)} series")
    print(f"{len(queries(dash)) - bad}/{len(queries(dash))} dashboard queries answered with data")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
