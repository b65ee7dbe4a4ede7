"""Static checks of deploy/ (no Docker needed): compose file, Dockerfile, .env, and the small
scripts the images run (health probe, edge entry point, compose report).

The end-to-end run with a Docker engine is deploy/compose_test.sh (.ci/run calls it).
"""
from __future__ import annotations

import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
from concurrent import futures
from pathlib import Path

import grpc
import pytest
import tomllib
import yaml  # PyYAML (installed with the train extras through timm)
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from rkdsc.common.config import ENV_KEYS, load_config

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
ROLES = ("server", "basestation", "edge")
FIXED_EDGES = ("edge-near", "edge-mid", "edge-far")

sys.path.insert(0, str(DEPLOY))
import compose_report  # noqa: E402
import edge_entrypoint  # noqa: E402
import healthcheck  # noqa: E402
from tests.conftest import free_port  # noqa: E402


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def dockerfile() -> str:
    # join continuation lines so that each instruction is one line
    return re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())


def stages(dockerfile: str) -> dict[str, list[str]]:
    """Stage name -> its instruction lines (comments dropped)."""
    out: dict[str, list[str]] = {}
    current = None
    for line in dockerfile.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if m:
            current = m.group(2) or f"_{len(out)}"
            out[current] = [line]
        elif current is not None:
            out[current].append(line)
    return out


def ancestry(st: dict[str, list[str]], name: str) -> list[str]:
    """The stage and the stages it is built FROM or COPY --from, transitively."""
    seen, todo = [], [name]
    while todo:
        s = todo.pop()
        if s in seen or s not in st:
            continue
        seen.append(s)
        parent = re.match(r"FROM\s+(\S+)", st[s][0], re.IGNORECASE).group(1)
        todo.append(parent)
        todo += re.findall(r"--from=(\S+)", " ".join(st[s][1:]))
    return seen


# ------------------------------------------------------------------ compose.yaml
def test_compose_has_the_fig1_topology(compose):
    services = compose["services"]
    for name in ("server", "basestation", *FIXED_EDGES, "edge", "report"):
        assert name in services, f"compose.yaml: service {name!r} is missing"
    assert services["server"]["build"]["target"] == "server"
    assert services["basestation"]["build"]["target"] == "basestation"
    assert services["edge-near"]["build"]["target"] == "edge"
    assert services["edge"]["profiles"] == ["scale"]
    for name in FIXED_EDGES:
        assert services[name]["environment"]["RKDSC_EDGE_ID"] == name
        assert services[name]["image"] == services["edge-near"]["image"]


def test_every_service_is_health_checked_or_waits_on_conditions(compose):
    for name, svc in compose["services"].items():
        deps = svc.get("depends_on")
        if "healthcheck" in svc:
            test = svc["healthcheck"]["test"]
            assert test[0] == "CMD" and "deploy/healthcheck.py" in test, f"{name}: healthcheck {test}"
        elif not (svc.get("restart") == "no" and svc.get("network_mode") == "none"):  # a first one-shot (certs)
            assert isinstance(deps, dict) and deps, f"{name}: neither a healthcheck nor depends_on conditions"
        if deps is not None:
            assert isinstance(deps, dict), f"{name}: depends_on must be a mapping with conditions"
            for dep, spec in deps.items():
                assert dep in compose["services"], f"{name}: depends on unknown service {dep!r}"
                assert spec.get("condition") in ("service_healthy", "service_completed_successfully"), \
                    f"{name}.depends_on.{dep}: condition {spec.get('condition')!r}"
    assert compose["services"]["basestation"]["depends_on"]["server"]["condition"] == "service_healthy"
    report_deps = compose["services"]["report"]["depends_on"]
    assert set(FIXED_EDGES) <= set(report_deps)
    assert report_deps["edge"].get("required") is False  # the scale profile is optional


def test_compose_edges_match_the_topology(compose):
    cfg = load_config(DEPLOY / "topology.toml", env={})
    assert {t.id for t in cfg.transmitters} == set(FIXED_EDGES)
    settings = {(t.snr_db, t.fading, t.seed) for t in cfg.transmitters}
    assert len(settings) == len(FIXED_EDGES), "the three edge devices should have different link settings"


def test_published_ports_are_loopback_only_and_match_the_topology(compose):
    cfg = load_config(DEPLOY / "topology.toml", env={})
    published = {}
    for name, svc in compose["services"].items():
        for p in svc.get("ports", []):
            host, _, container = str(p).rpartition(":")
            assert host.startswith("127.0.0.1:"), f"{name}: port {p!r} is not bound to 127.0.0.1"
            published.setdefault(name, set()).add(int(container))
    assert cfg.server.metrics_port in published["server"]
    assert cfg.basestation.metrics_port in published["basestation"]
    assert cfg.basestation.port in published["basestation"]


def test_results_are_written_to_a_mounted_folder(compose):
    for name in (*FIXED_EDGES, "edge", "report"):
        vols = compose["services"][name]["volumes"]
        assert any(str(v).endswith(":/app/runs/compose") for v in vols), f"{name}: no results mount in {vols}"


def test_env_file_holds_endpoints_only():
    keys = {}
    for line in (DEPLOY / ".env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            k, _, v = line.partition("=")
            keys[k] = v
    assert set(keys) <= set(ENV_KEYS), f"deploy/.env: not endpoint keys: {set(keys) - set(ENV_KEYS)}"
    assert keys["RKDSC_SERVER_ADDR"].removeprefix("dns:///").split(":")[0] == "server"
    assert keys["RKDSC_RELAY_ADDR"].split(":")[0] == "basestation"
    cfg = load_config(DEPLOY / "topology.toml", env=keys)  # the values parse as endpoints
    assert cfg.server.port == int(keys["RKDSC_SERVER_ADDR"].rsplit(":")[-1])
    assert cfg.basestation.port == int(keys["RKDSC_RELAY_ADDR"].rsplit(":")[1])


def test_the_server_service_scales_and_the_relay_dials_every_replica(compose):
    """`docker compose up --scale server=2`: nothing of the server service is per container (no
    container_name, no fixed host port: the metrics port is published from a range, the gRPC port
    not at all), and the relay's server address is a DNS round-robin target over the service name."""
    from rkdsc.basestation.upstream import upstream_target
    from rkdsc.common.service import service_config

    server = compose["services"]["server"]
    assert "container_name" not in server and "hostname" not in server
    for p in server.get("ports", []):
        default = (str(p).split(":-", 1)[1].split("}", 1)[0] if ":-" in str(p)  # ${VAR:-default}
                   else str(p).rpartition(":")[0].rpartition(":")[2])
        assert "-" in default, f"server: port {p!r} publishes one host port (a second replica cannot bind it)"
    keys = dict(line.split("=", 1) for line in (DEPLOY / ".env").read_text().splitlines()
                if line.strip() and not line.startswith("#"))
    cfg = load_config(DEPLOY / "topology.toml", env=keys)
    assert cfg.basestation.server_addr == "dns:///server:50051"
    assert upstream_target(cfg.basestation.server_addr) == "dns:///server:50051"
    assert json.loads(service_config())["loadBalancingConfig"] == [{"round_robin": {}}]


def test_override_example_parses_and_names_known_services(compose):
    override = yaml.safe_load((DEPLOY / "compose.override.example.yaml").read_text())
    assert set(override["services"]) <= set(compose["services"])


# ------------------------------------------------------------------ Dockerfile
def test_dockerfile_has_a_target_per_role(dockerfile):
    st = stages(dockerfile)
    for role in ROLES:
        assert role in st, f"Dockerfile: no stage {role!r}"
        assert any(line.startswith("ENTRYPOINT") for line in st[role]), f"stage {role}: no ENTRYPOINT"


def test_role_images_carry_no_torch_and_no_scikit_learn(dockerfile):
    st = stages(dockerfile)
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not [d for d in deps if re.match(r"(torch|torchvision|timm|scikit-learn)\b", d)], deps
    for role in ROLES:
        chain = ancestry(st, role)
        # the role's file system comes only from stages that install no torch
        for s in chain:
            for line in st[s]:
                for cmd in re.split(r"&&|;", line):
                    if "pip install" in cmd:
                        assert not re.search(r"\b(torch|torchvision|timm)\b", cmd), f"stage {s}: {cmd}"
                        assert "[train" not in cmd and ".[" not in cmd, f"stage {s} installs extras: {cmd}"
        # scikit-learn only in the samples stage, whose files reach the edge image as PNGs only
        copies = [line for s in (role, "runtime") for line in st[s] if "--from=" in line]
        for line in copies:
            src = re.search(r"--from=(\S+)\s+(\S+)", line)
            assert src.group(1) in ("venv", "samples"), line
            if src.group(1) == "samples":
                assert src.group(2).startswith("/app/runs/samples"), line
        assert "samples" not in [re.match(r"FROM\s+(\S+)", st[s][0]).group(1) for s in chain]


def test_dependencies_come_from_pyproject_and_project_has_no_deps(dockerfile):
    st = stages(dockerfile)
    assert any("tomllib" in line and "dependencies" in line for line in st["deps"])
    assert any("pip install --no-deps ." in line for line in st["project"])


def _shell_words(line: str) -> str:
    return line.split(None, 1)[1]


def test_compose_topology_pool_is_valid_and_keeps_the_fixed_edges(dockerfile, tmp_path):
    """Run the Dockerfile's pool-generation RUN step on a copy of deploy/topology.toml."""
    st = stages(dockerfile)
    run = next(line for line in st["runtime"] if "topology.compose.toml" in line and line.startswith("RUN"))
    args = dict(re.findall(r"ARG\s+(SCALE_\w+)=(\S+)", " ".join(st["runtime"])))
    assert int(args["SCALE_POOL"]) >= 2
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / "topology.toml").write_bytes((DEPLOY / "topology.toml").read_bytes())
    env = {**os.environ, **args, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["sh", "-c", _shell_words(run)], cwd=tmp_path, env=env, check=True, capture_output=True)
    pool = load_config(tmp_path / "deploy" / "topology.compose.toml", env={})
    base = load_config(DEPLOY / "topology.toml", env={})
    ids = [t.id for t in pool.transmitters]
    assert ids == [t.id for t in base.transmitters] + [f"edge-{i}" for i in range(1, int(args["SCALE_POOL"]) + 1)]
    for t in base.transmitters:
        p = pool.transmitter(t.id)
        assert (p.snr_db, p.fading, p.seed, p.task) == (t.snr_db, t.fading, t.seed, t.task)
    extra = pool.transmitter("edge-1")
    assert extra.snr_db == float(args["SCALE_SNR_DB"]) and extra.fading == args["SCALE_FADING"]
    assert len({pool.transmitter(f"edge-{i}").seed for i in (1, 2)}) == 2


def test_dockerignore_keeps_the_venv_out_of_the_build_context():
    lines = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    assert "*" in lines, "expected a whitelist .dockerignore (everything ignored by default)"
    assert "!.venv" not in lines and "!.venv/" not in lines
    for path in ("pyproject.toml", "common/", "proto/", "edge/", "basestation/", "server/", "deploy/"):
        assert f"!{path}" in lines, f".dockerignore: {path} not re-included"


# ------------------------------------------------------------------ healthcheck.py
@pytest.fixture
def health_server():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(0)


def test_healthcheck_follows_the_serving_status(health_server):
    servicer, addr = health_server
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert healthcheck.main([addr, "--timeout", "2"]) == 1
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert healthcheck.main([addr, "--timeout", "2"]) == 0
    assert healthcheck.main([addr, "--service", "rkdsc.v1.Nothing", "--timeout", "2"]) == 1  # NOT_FOUND


def test_healthcheck_fails_when_nothing_listens():
    port = free_port()  # outside the ephemeral range: no client self-connects to it
    assert healthcheck.main([f"127.0.0.1:{port}", "--timeout", "0.5"]) == 1


def test_healthcheck_metrics_probe(health_server):
    from prometheus_client import CollectorRegistry, Counter, start_http_server

    servicer, addr = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    reg = CollectorRegistry()
    Counter("rkdsc_probe_total", "probe", registry=reg).inc()
    httpd, _ = start_http_server(0, addr="127.0.0.1", registry=reg)
    try:
        assert healthcheck.main([addr, "--metrics", str(httpd.server_address[1])]) == 0
    finally:
        httpd.shutdown()
        httpd.server_close()


# ------------------------------------------------------------------ edge_entrypoint.py
def _ptr_answer(query: bytes, name: str) -> bytes:
    qid = query[:2]
    header = qid + struct.pack(">HHHHH", 0x8180, 1, 1, 0, 0)
    question = query[12:]
    rdata = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    answer = struct.pack(">HHHIH", 0xC00C, 12, 1, 600, len(rdata)) + rdata  # name: pointer to the question
    return header + question + answer


def test_reverse_dns_reads_the_replica_name_from_a_ptr_answer():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as srv:
        srv.bind(("127.0.0.1", 0))
        seen = []

        def answer_once():
            query, peer = srv.recvfrom(512)
            seen.append(query)
            srv.sendto(_ptr_answer(query, "rkdsc-edge-3.rkdsc_default"), peer)

        t = threading.Thread(target=answer_once, daemon=True)
        t.start()
        name = edge_entrypoint.reverse_dns("172.18.0.5", server=srv.getsockname(), timeout_s=5)
        t.join(5)
    assert name == "rkdsc-edge-3.rkdsc_default"
    assert b"\x015\x010\x0218\x03172\x07in-addr\x04arpa\x00" in seen[0]  # reversed address, PTR query
    assert edge_entrypoint.replica_from_name(name) == 3


def test_reverse_dns_gives_none_without_an_answer():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as srv:
        srv.bind(("127.0.0.1", 0))  # never answers
        assert edge_entrypoint.reverse_dns("10.0.0.1", server=srv.getsockname(), timeout_s=0.2) is None
    assert edge_entrypoint.reverse_dns("not-an-ip") is None


@pytest.mark.parametrize("name,n", [("rkdsc-edge-12.net", 12), ("deploy_edge_2", 2), ("edge-near", None),
                                    ("", None), (None, None)])
def test_replica_from_name(name, n):
    assert edge_entrypoint.replica_from_name(name) == n


def test_explicit_edge_id_wins():
    assert edge_entrypoint.transmitter_id({"RKDSC_EDGE_ID": "edge-mid"}) == "edge-mid"


# ------------------------------------------------------------------ compose_report.py
def _edge_summary(tid: str, images: int, answered: int, accuracy: float) -> dict:
    return {"id": tid, "task": "digits", "snr_db": 5.0, "fading": "awgn", "images": images,
            "answered": answered, "errors": images - answered, "accuracy": accuracy,
            "latency_ms": {"p50": 1.0, "p99": 2.0}, "symbols_per_image": 51, "wall_s": 3.0,
            "stream_error": None}


def test_report_writes_a_demo_format_summary_in_topology_order(tmp_path, capsys):
    for tid in ("edge-far", "edge-near", "edge-2"):
        (tmp_path / tid).mkdir()
        (tmp_path / tid / "summary.json").write_text(json.dumps(_edge_summary(tid, 10, 10, 0.9)))
    rc = compose_report.main(["--out", str(tmp_path), "--config", str(DEPLOY / "topology.toml")])
    assert rc == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [r["id"] for r in summary["transmitters"]] == ["edge-near", "edge-far", "edge-2"]
    for key in ("id", "task", "snr_db", "fading", "images", "answered", "errors", "accuracy",
                "latency_ms", "symbols_per_image"):
        assert key in summary["transmitters"][0]
    assert summary["wall_s"] == 3.0
    assert "edge-near" in capsys.readouterr().out


def test_report_fails_on_unanswered_images_or_missing_devices(tmp_path):
    (tmp_path / "edge-near").mkdir()
    (tmp_path / "edge-near" / "summary.json").write_text(json.dumps(_edge_summary("edge-near", 10, 9, 0.5)))
    assert compose_report.main(["--out", str(tmp_path)]) == 1
    (tmp_path / "edge-near" / "summary.json").write_text(json.dumps(_edge_summary("edge-near", 10, 10, 0.5)))
    assert compose_report.main(["--out", str(tmp_path)]) == 0
    assert compose_report.main(["--out", str(tmp_path), "--expect", "edge-near,edge-mid"]) == 1
