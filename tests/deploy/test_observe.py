"""Static checks of the live view (compose profile `observe`, deploy/observe/); no engine needed.

- every PromQL query of the Grafana dashboard names only metrics (and labels) that the edge
  server's and the relay's registries export (rkdsc.common.metrics), read by the PromQL
  reader of deploy/observe/dashboard.py, which is tested here too;
- Prometheus scrapes exactly the compose services' metrics ports of the topology;
- the Grafana provisioning (data source, dashboard provider, mounts) fits together.

The engine test (a real Prometheus scraping a real run, every dashboard query sent to it) is
deploy/observe_test.sh.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

from prometheus_client import Counter, Gauge, Histogram, Summary, generate_latest

from rkdsc.common.config import load_config
from rkdsc.common.metrics import RelayMetrics, ServerMetrics, parse_metrics

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
OBSERVE = DEPLOY / "observe"

sys.path.insert(0, str(OBSERVE))
import dashboard as dash  # noqa: E402  (deploy/observe/dashboard.py)

# Series Prometheus itself adds for every scrape target (not exported by the services)
PROMETHEUS_TARGET_SERIES = {"up": set()}
# Labels Prometheus attaches to every scraped series: job, instance and the static `role`
# label of deploy/observe/prometheus.yml
TARGET_LABELS = {"job", "instance", "role"}
# What the live view must show (the list), by the metrics that carry it
REQUIRED = {
    "accuracy per device and task": {"rkdsc_correct_total", "rkdsc_labelled_total"},
    "link SNR": {"rkdsc_link_snr_db"},
    "latency histograms": {"rkdsc_relay_roundtrip_seconds_bucket", "rkdsc_decode_seconds_bucket"},
    "batch sizes": {"rkdsc_batch_size_bucket"},
    "frames by outcome": {"rkdsc_frames_total", "rkdsc_relay_frames_total"},
}


def _exported(metrics_obj) -> dict[str, set[str]]:
    """Series name -> label names, as the service's /metrics text shows them once every metric
    has a sample (one child per labelled metric, label values made up)."""
    for m in vars(metrics_obj).values():
        if not isinstance(m, (Counter, Gauge, Histogram, Summary)):
            continue
        names = getattr(m, "_labelnames", ())
        child = m.labels(*[f"x{i}" for i in range(len(names))]) if names else m
        if isinstance(m, Counter):
            child.inc()
        elif isinstance(m, Gauge):
            child.set(1.0)
        else:
            child.observe(0.001)
    out: dict[str, set[str]] = {}
    for (name, labels), _ in parse_metrics(generate_latest(metrics_obj.registry).decode()).items():
        out.setdefault(name, set()).update(k for k, _ in labels)
    return out


@pytest.fixture(scope="module")
def exported() -> dict[str, set[str]]:
    """Every series the server and the relay export, with its label names."""
    server, relay = _exported(ServerMetrics()), _exported(RelayMetrics())
    assert not set(server) & set(relay), "server and relay export a series of the same name"
    return {**server, **relay}


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return dash.load()


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def prometheus_yml() -> dict:
    return yaml.safe_load((OBSERVE / "prometheus.yml").read_text())


# ------------------------------------------------------------------ the PromQL reader
@pytest.mark.parametrize("expr, metrics, labels", [
    ('rkdsc_link_snr_db', {"rkdsc_link_snr_db"}, set()),
    ('sum by (transmitter, task) (rate(rkdsc_frames_total{outcome="ok"}[5m]))',
     {"rkdsc_frames_total"}, {"transmitter", "task", "outcome"}),
    ('sum(rate(a_total{x="rate(b_total)", y=~"$v|c"}[$__rate_interval] offset -1h)) without (z)',
     {"a_total"}, {"x", "y", "z"}),
    ('histogram_quantile(0.99, sum by (le) (rate(h_bucket[1m]))) > bool 1e-3',
     {"h_bucket"}, {"le"}),
    ('a / on (t) group_left (task) b or vector(0) unless c', {"a", "b", "c"}, {"t", "task"}),
    ('a * ignoring(x) group_right b', {"a", "b"}, {"x"}),
    ('{__name__="m", job="j"} + max_over_time(n[10m:30s]) @ end()', {"m", "n"}, {"job"}),
    ('sum(x) by (a) + topk(3, y) - count_values("v", z) + Inf', {"x", "y", "z"}, {"a"}),
    ('label_replace(up, "dst", "$1", "src", "(.*)")  # a comment naming not_a_metric', {"up"}, set()),
    ('clamp_min(a:recorded:rate5m, 0)', {"a:recorded:rate5m"}, set()),
])
def test_promql_reader_tells_metrics_from_everything_else(expr, metrics, labels):
    a = dash.analyze(expr)
    assert a.metrics == metrics
    assert a.labels == labels


@pytest.mark.parametrize("expr", [
    "rat(x[1m])",                       # a typo of a function
    "sum(rate(x[1m])",                  # unbalanced
    "x{job}",                           # matcher without operator
    "sum by x (y)",                     # by without a list
])
def test_promql_reader_rejects_what_it_cannot_account_for(expr):
    with pytest.raises(dash.PromQLError):
        dash.analyze(expr)


def test_variables_are_substituted_like_grafana_defaults(dashboard):
    expr = 'sum(rate(rkdsc_frames_total{transmitter=~"$transmitter"}[$__rate_interval])) + ${window:raw}'
    got = dash.substitute(expr, dashboard, {"__rate_interval": "30s"})
    assert got == 'sum(rate(rkdsc_frames_total{transmitter=~".*"}[30s])) + 1m'
    with pytest.raises(dash.PromQLError):
        dash.substitute("x[$nope]", dashboard)


# ------------------------------------------------------------------ the dashboard's queries
def test_exported_series_are_what_the_metrics_module_documents(exported):
    # the reference list the dashboard is checked against: counters end in _total, histograms
    # come as _bucket/_sum/_count (the text format's _created series are there too)
    assert {"rkdsc_frames_total", "rkdsc_correct_total", "rkdsc_labelled_total", "rkdsc_link_snr_db",
            "rkdsc_batch_size_bucket", "rkdsc_decode_seconds_bucket",
            "rkdsc_relay_roundtrip_seconds_bucket"} <= set(exported)
    assert {"transmitter", "task", "outcome"} <= exported["rkdsc_frames_total"]
    assert "le" in exported["rkdsc_batch_size_bucket"]


def test_dashboard_queries_name_only_exported_metrics_and_labels(dashboard, exported):
    known = {**exported, **PROMETHEUS_TARGET_SERIES}
    qs = dash.queries(dashboard)
    assert len(qs) >= 10
    problems = []
    for where, q in qs:
        a = dash.analyze(q)
        if not a.metrics:
            problems.append(f"{where}: names no metric: {q}")
        for m in sorted(a.metrics - set(known)):
            close = [k for k in known if k.startswith(m.rsplit("_", 1)[0])][:3]
            problems.append(f"{where}: {m!r} is not exported by the server or the relay"
                            + (f" (did you mean {close}?)" if close else ""))
        have = set().union(*(known.get(m, set()) for m in a.metrics)) | TARGET_LABELS
        for label in sorted(a.labels - have):
            problems.append(f"{where}: label {label!r} is on none of {sorted(a.metrics)}")
    assert not problems, "\n".join(problems)


def test_dashboard_shows_what_the_live_view_promises(dashboard):
    used = set()
    for _, q in dash.queries(dashboard):
        used |= dash.analyze(q).metrics
    missing = {view: sorted(names - used) for view, names in REQUIRED.items() if names - used}
    assert not missing, f"views without their metrics: {missing}"
    titles = " ".join(p.get("title", "").lower() for p in dash.panels(dashboard))
    for word in ("accuracy", "snr", "latency", "batch", "outcome"):
        assert word in titles or word in " ".join(
            p.get("description", "").lower() for p in dash.panels(dashboard)), word


def test_dashboard_is_well_formed_for_grafana(dashboard):
    ds = yaml.safe_load((OBSERVE / "grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = ds["datasources"][0]["uid"]
    assert dashboard["uid"] and dashboard["title"] and isinstance(dashboard["schemaVersion"], int)
    ids = [p["id"] for p in dash.panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    defined = {v["name"] for v in dashboard["templating"]["list"]} | set(dash.BUILTINS)
    for p in dash.panels(dashboard):
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, f"panel {p['id']}: gridPos {g}"
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == uid, f"panel {p['id']}: data source {p['datasource']}"
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(refs) == len(set(refs)), f"panel {p['id']}: refIds {refs}"
        for t in p["targets"]:
            assert t["datasource"]["uid"] == uid
            used = dash.analyze(t["expr"]).variables
            assert used <= defined, f"panel {p['id']}: undefined variables {used - defined}"
            dash.substitute(t["expr"], dashboard)   # every variable has a default
    for v in dashboard["templating"]["list"]:
        if v["type"] == "query":
            assert v["datasource"]["uid"] == uid


# ------------------------------------------------------------------ Prometheus and compose
def test_prometheus_scrapes_the_compose_services_metrics_ports(prometheus_yml, compose):
    cfg = load_config(DEPLOY / "topology.toml", env={})
    want = {"server": cfg.server.metrics_port, "basestation": cfg.basestation.metrics_port}
    assert float(re.match(r"(\d+)s$", prometheus_yml["global"]["scrape_interval"]).group(1)) <= 5
    targets = {}
    for job in prometheus_yml["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == "/metrics"
        assert job["job_name"].startswith("rkdsc-")   # the dashboard's up{job=~"rkdsc-.*"}
        for sc in job.get("static_configs", []):
            for t in sc["targets"]:
                host, _, port = t.rpartition(":")
                targets[host] = int(port)
        for sd in job.get("dns_sd_configs", []):  # every replica of a scaled service (one A record each)
            assert sd["type"] == "A" and float(sd["refresh_interval"].rstrip("s")) <= 30
            for name in sd["names"]:
                targets[name] = int(sd["port"])
    assert targets == want
    server_job = next(j for j in prometheus_yml["scrape_configs"] if j["job_name"] == "rkdsc-server")
    assert "dns_sd_configs" in server_job  # `--scale server=2`: both replicas scraped, not one per scrape
    for svc, port in want.items():
        s = compose["services"][svc]
        assert any(str(p).endswith(f":{port}") for p in s["ports"]), f"{svc} does not serve :{port}"
        env = s.get("environment") or {}
        assert "RKDSC_SERVER_METRICS_PORT" not in env and "RKDSC_RELAY_METRICS_PORT" not in env
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    for port in want.values():
        assert re.search(rf"(?m)^EXPOSE .*\b{port}\b", dockerfile), f"Dockerfile does not EXPOSE {port}"


def _mounts(svc: dict) -> dict[str, Path]:
    out = {}
    for v in svc["volumes"]:
        src, dst = str(v).split(":")[:2]
        out[dst] = (DEPLOY / src).resolve()
    return out


def test_observe_profile_services(compose):
    services = compose["services"]
    prom, graf = services["prometheus"], services["grafana"]
    for name, svc, env, official in (("prometheus", prom, "RKDSC_PROMETHEUS_IMAGE", "prom/prometheus:"),
                                     ("grafana", graf, "RKDSC_GRAFANA_IMAGE", "grafana/grafana:")):
        assert svc["profiles"] == ["observe"], f"{name} must be in the observe profile only"
        m = re.fullmatch(r"\$\{(\w+):-([^}]+)\}", svc["image"])
        assert m and m.group(1) == env and m.group(2).startswith(official), svc["image"]
        for p in svc["ports"]:
            assert str(p).startswith("127.0.0.1:"), f"{name}: {p} is not loopback only"
        assert "build" not in svc
    # no other service is in the profile, and the default stack does not start these two
    assert [n for n, s in services.items() if "observe" in s.get("profiles", [])] == ["prometheus", "grafana"]

    # Prometheus: the config it is told to read is the one mounted
    flags = dict(a.split("=", 1) for a in prom["command"])
    mounts = _mounts(prom)
    assert mounts[flags["--config.file"]] == (OBSERVE / "prometheus.yml").resolve()
    port = int(flags["--web.listen-address"].rpartition(":")[2])
    assert any(str(p).endswith(f":{port}") for p in prom["ports"])

    # Grafana: data source -> the prometheus service; provider path -> the dashboards mount
    mounts = _mounts(graf)
    ds_dir = mounts["/etc/grafana/provisioning/datasources"]
    (ds,) = yaml.safe_load((ds_dir / "prometheus.yml").read_text())["datasources"]
    assert ds["type"] == "prometheus" and ds["url"] == f"http://prometheus:{port}"
    assert ds["jsonData"]["timeInterval"] == yaml.safe_load(
        (OBSERVE / "prometheus.yml").read_text())["global"]["scrape_interval"]
    (prov,) = yaml.safe_load((mounts["/etc/grafana/provisioning/dashboards"] / "rkdsc.yml").read_text())["providers"]
    board_dir = prov["options"]["path"]
    assert mounts[board_dir] == (OBSERVE / "grafana/dashboards").resolve()
    env = graf["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true" and env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(board_dir + "/") and (mounts[board_dir] / Path(home).name).is_file()
    for svc in (prom, graf):
        assert svc["depends_on"]["basestation"]["condition"] == "service_healthy"


def test_engine_test_builds_prometheus_from_the_distribution_package():
    script = (DEPLOY / "observe_test.sh").read_text()
    dockerfile = (OBSERVE / "prometheus.Dockerfile").read_text()
    assert re.search(r"apt-get install .*\bprometheus\b", dockerfile)
    assert "/usr/bin/prometheus" in dockerfile
    assert "RKDSC_PROMETHEUS_IMAGE" in script and "dashboard.py" in script
