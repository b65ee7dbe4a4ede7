"""Compose runs without Docker: the root compose.yaml, run ids (deploy/compose_run.py), the
edge supervisor and heartbeat (deploy/edge_entrypoint.py, deploy/healthcheck.py), and the
report waiting for every device of one run (deploy/compose_report.py).

The end-to-end run with a Docker engine is deploy/compose_test.sh.
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
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
FIXED_EDGES = ("edge-near", "edge-mid", "edge-far")

sys.path.insert(0, str(DEPLOY))
import compose_report  # noqa: E402
import compose_run  # noqa: E402
import edge_entrypoint  # noqa: E402
import healthcheck  # noqa: E402


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def _default(value: str) -> str:
    """'${VAR:-10001}:${VAR2:-10001}' -> '10001:10001' (compose's default interpolation)."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value))


# ------------------------------------------------------------------ compose files
def test_root_compose_file_includes_the_deploy_stack():
    root = yaml.safe_load((REPO / "compose.yaml").read_text())
    assert root["include"] == ["deploy/compose.yaml"]
    assert "services" not in root  # one definition of the stack: deploy/compose.yaml
    assert _default(root["name"]) == _default(yaml.safe_load((DEPLOY / "compose.yaml").read_text())["name"])


def test_long_running_services_restart_on_failure(compose):
    for name in ("server", "basestation"):
        policy = str(compose["services"][name].get("restart", ""))
        assert policy == "unless-stopped" or policy.startswith("on-failure"), f"{name}: restart {policy!r}"


def test_edge_and_report_containers_do_not_run_as_root(compose):
    for name in (*FIXED_EDGES, "edge", "report"):
        user = _default(compose["services"][name]["user"])
        assert user.split(":")[0] not in ("0", "root", ""), f"{name}: user {user!r}"
    # the only root step: the one-shot run preparation, without network and with few capabilities
    run = compose["services"]["run"]
    assert run["network_mode"] == "none" and run["cap_drop"] == ["ALL"]
    assert set(run["cap_add"]) <= {"CHOWN", "DAC_OVERRIDE", "FOWNER"}


def test_images_end_as_the_rkdsc_user():
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    stage, users = None, {}
    parents = {}
    for line in text.splitlines():
        line = line.strip()
        m = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if m:
            stage = m.group(2)
            parents[stage] = m.group(1)
        elif stage and line.startswith("USER "):
            users[stage] = line.split()[1]
    for role in ("server", "basestation", "edge"):
        s, user = role, None
        while s is not None and user is None:
            user, s = users.get(s), parents.get(s)
        assert user == "rkdsc", f"stage {role}: runs as {user!r}"


def test_edges_are_health_checked_by_heartbeat_and_wait_for_the_run(compose):
    for name in (*FIXED_EDGES, "edge"):
        svc = compose["services"][name]
        test = svc["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "deploy/healthcheck.py"] and "--heartbeat" in test
        assert test[test.index("--heartbeat") + 1] == edge_entrypoint.HEARTBEAT_FILE
        assert svc["depends_on"]["run"]["condition"] == "service_completed_successfully"
    assert compose["services"]["run"]["entrypoint"][-1] == "deploy/compose_run.py"


def test_report_waits_itself_for_every_device(compose):
    report = compose["services"]["report"]
    env = report["environment"]
    assert env["RKDSC_REPORT_EXPECT"].split(",") == list(FIXED_EDGES)
    assert env["RKDSC_REPORT_DISCOVER"] == "edge"
    # compose only holds it back; a failed device must not keep it from running and naming it
    assert all(dep.get("required") is False for dep in report["depends_on"].values())


def test_the_image_carries_the_run_script():
    text = (DEPLOY / "Dockerfile").read_text()
    copy = next(line for line in text.splitlines() if line.startswith("COPY deploy/topology.toml"))
    for script in ("healthcheck.py", "edge_entrypoint.py", "compose_report.py", "compose_run.py"):
        assert f"deploy/{script}" in copy


# ------------------------------------------------------------------ run ids
def test_run_preparation_makes_a_fresh_run_and_a_placeholder_summary(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"transmitters": [{"id": "edge-9"}]}))  # an old run's
    first = compose_run.prepare(str(tmp_path), env={})
    time.sleep(0.01)
    second = compose_run.prepare(str(tmp_path), env={})
    assert first != second and edge_entrypoint.valid_run_id(second)
    assert (tmp_path / first).is_dir() and (tmp_path / second).is_dir()
    assert (tmp_path / "current-run").read_text().strip() == second
    placeholder = json.loads((tmp_path / "summary.json").read_text())
    assert placeholder["run_id"] == second and placeholder["state"] == "running"
    assert placeholder["transmitters"] == []
    assert os.readlink(tmp_path / "latest") == second
    assert compose_run.prepare(str(tmp_path), env={"RKDSC_RUN_ID": "mine-1"}) == "mine-1"
    with pytest.raises(ValueError, match="RKDSC_RUN_ID"):
        compose_run.prepare(str(tmp_path), env={"RKDSC_RUN_ID": "../escape"})


def test_edges_take_the_run_id_from_the_env_or_current_run(tmp_path):
    assert edge_entrypoint.current_run_id(str(tmp_path), env={"RKDSC_RUN_ID": "r1"}) == ("r1", "RKDSC_RUN_ID")
    (tmp_path / "current-run").write_text("20250101T000000Z-abcdef\n")
    assert edge_entrypoint.current_run_id(str(tmp_path), env={})[0] == "20250101T000000Z-abcdef"
    (tmp_path / "current-run").write_text("../../etc\n")  # never a path outside the results
    run_id, source = edge_entrypoint.current_run_id(str(tmp_path), env={})
    assert edge_entrypoint.valid_run_id(run_id) and source.startswith("new")


# ------------------------------------------------------------------ supervisor + heartbeat
def _supervise(tmp_path, code: str, heartbeat_s: float = 0.2):
    status = tmp_path / "status.json"
    beat = tmp_path / "heartbeat"
    sup = edge_entrypoint.Supervisor([sys.executable, "-c", code], str(status), {"id": "edge-x", "run_id": "r"},
                                     heartbeat_path=str(beat), heartbeat_s=heartbeat_s)
    return sup, status, beat


def test_supervisor_records_exit_status_and_stderr_tail(tmp_path, capfd):
    sup, status, beat = _supervise(tmp_path, "import sys; print('edge-x: no such transmitter', file=sys.stderr); "
                                             "sys.exit(2)")
    assert sup.run() == 2
    st = json.loads(status.read_text())
    assert st["state"] == "exited" and st["exit_code"] == 2 and st["id"] == "edge-x" and st["run_id"] == "r"
    assert st["stderr_tail"] == ["edge-x: no such transmitter"]
    assert not beat.exists()  # not healthy once the edge has ended
    assert "no such transmitter" in capfd.readouterr().err  # passed through


def test_supervisor_heartbeat_keeps_the_health_check_green_while_the_edge_runs(tmp_path):
    sup, status, beat = _supervise(tmp_path, "import time; time.sleep(1.2)")
    results = []

    def probe():
        time.sleep(0.6)
        results.append(healthcheck.main(["--heartbeat", str(beat), "--max-age", "5"]))
        results.append(json.loads(status.read_text())["state"])

    t = threading.Thread(target=probe)
    t.start()
    assert sup.run() == 0
    t.join()
    assert results == [0, "running"]
    assert healthcheck.main(["--heartbeat", str(beat)]) == 1  # gone after the end


def test_heartbeat_health_check_fails_when_stale_or_the_process_is_gone(tmp_path):
    beat = tmp_path / "hb"
    beat.write_text(json.dumps({"time": time.time(), "pid": os.getpid()}))
    assert healthcheck.main(["--heartbeat", str(beat), "--max-age", "5"]) == 0
    beat.write_text(json.dumps({"time": time.time() - 60, "pid": os.getpid()}))
    assert healthcheck.main(["--heartbeat", str(beat), "--max-age", "5"]) == 1
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    beat.write_text(json.dumps({"time": time.time(), "pid": dead.pid}))
    assert healthcheck.main(["--heartbeat", str(beat), "--max-age", "5"]) == 1
    beat.write_text("not json")
    assert healthcheck.main(["--heartbeat", str(beat)]) == 1
    with pytest.raises(SystemExit):
        healthcheck.main([])  # neither an address nor a heartbeat


def test_lookup_a_lists_every_replica_address():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as srv:
        srv.bind(("127.0.0.1", 0))

        def answer_once():
            query, peer = srv.recvfrom(512)
            header = query[:2] + struct.pack(">HHHHH", 0x8180, 1, 2, 0, 0)
            answers = b"".join(struct.pack(">HHHIH", 0xC00C, 1, 1, 600, 4) + socket.inet_aton(ip)
                               for ip in ("172.18.0.7", "172.18.0.5"))
            srv.sendto(header + query[12:] + answers, peer)

        t = threading.Thread(target=answer_once, daemon=True)
        t.start()
        ips = edge_entrypoint.lookup_a("edge", server=srv.getsockname(), timeout_s=5)
        t.join(5)
    assert ips == ["172.18.0.5", "172.18.0.7"]


# ------------------------------------------------------------------ report over runs
def _device(run_dir: Path, tid: str, exit_code: int | None = 0, images: int = 10, state: str = "exited",
            summary: bool = True, tail: list[str] | None = None, heartbeat: float | None = None):
    d = run_dir / tid
    d.mkdir(parents=True, exist_ok=True)
    now = time.time()
    (d / "status.json").write_text(json.dumps({
        "id": tid, "run_id": run_dir.name, "state": state, "pid": 1, "started": now,
        "heartbeat": now if heartbeat is None else heartbeat, "exit_code": exit_code if state == "exited" else None,
        "ended": now, "stderr_tail": tail or []}))
    if summary:
        (d / "summary.json").write_text(json.dumps({
            "id": tid, "task": "digits", "snr_db": 5.0, "fading": "awgn", "images": images, "answered": images,
            "errors": 0, "accuracy": 0.9, "latency_ms": {"p50": 1.0, "p99": 2.0}, "symbols_per_image": 51,
            "wall_s": 3.0, "stream_error": None}))


def _report(out: Path, *args: str) -> int:
    return compose_report.main(["--out", str(out), "--config", str(DEPLOY / "topology.toml"), *args])


def test_report_reads_only_the_current_run(tmp_path):
    old, new = tmp_path / "20250101T000000Z-000001", tmp_path / "20250101T000100Z-000002"
    for i in range(1, 11):
        _device(old, f"edge-{i}")
    for tid in FIXED_EDGES:
        _device(new, tid)
    (tmp_path / "edge-near").mkdir()  # an old-layout folder next to the runs
    (tmp_path / "current-run").write_text(new.name + "\n")
    assert _report(tmp_path, "--expect", ",".join(FIXED_EDGES)) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [r["id"] for r in summary["transmitters"]] == list(FIXED_EDGES)
    assert summary["run_id"] == new.name and summary["state"] == "ok" and summary["failed"] == []
    assert json.loads((new / "summary.json").read_text()) == summary


def test_report_names_failed_and_missing_devices(tmp_path, capsys):
    run = tmp_path / "r1"
    for tid in FIXED_EDGES:
        _device(run, tid)
    for i in range(1, 9):
        _device(run, f"edge-{i}")
    for i in (9, 10):
        _device(run, f"edge-{i}", exit_code=2, summary=False,
                tail=["Traceback ...", f"rkdsc edge: transmitter 'edge-{i}' is not in the topology"])
    (tmp_path / "current-run").write_text("r1\n")
    assert _report(tmp_path, "--expect", "edge-near,edge-mid,edge-far,edge-11", "--no-wait") == 1
    err = capsys.readouterr().err
    assert "edge-9: failed (exit status 2): rkdsc edge: transmitter 'edge-9' is not in the topology" in err
    assert "edge-10: failed (exit status 2)" in err
    assert "edge-11: missing: never started" in err
    assert "FAILED: 3 device(s) failed or missing (edge-9, edge-10, edge-11)" in err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {f["id"] for f in summary["failed"]} == {"edge-9", "edge-10", "edge-11"}
    assert [r["id"] for r in summary["transmitters"]] == [*FIXED_EDGES, *(f"edge-{i}" for i in range(1, 9))]
    assert summary["state"] == "failed"


def test_report_waits_for_a_replica_that_is_still_running(tmp_path):
    run = tmp_path / "r2"
    for tid in ("edge-near", "edge-1"):
        _device(run, tid)
    _device(run, "edge-2", state="running", summary=False)
    (tmp_path / "current-run").write_text("r2\n")

    def finish_later():
        time.sleep(1.5)
        _device(run, "edge-2")

    t = threading.Thread(target=finish_later)
    t.start()
    t0 = time.monotonic()
    rc = _report(tmp_path)
    t.join()
    assert rc == 0 and time.monotonic() - t0 >= 1.4
    assert [r["id"] for r in json.loads((tmp_path / "summary.json").read_text())["transmitters"]] == \
        ["edge-near", "edge-1", "edge-2"]


def test_report_counts_a_silent_device_as_dead_and_times_out(tmp_path, capsys):
    run = tmp_path / "r3"
    _device(run, "edge-near")
    _device(run, "edge-1", state="running", summary=False, heartbeat=time.time() - 120)  # killed
    (tmp_path / "current-run").write_text("r3\n")
    assert _report(tmp_path, "--stale", "30") == 1
    assert "edge-1: failed: no heartbeat for" in capsys.readouterr().err
    _device(run, "edge-1", state="running", summary=False)  # alive but never ends
    t0 = time.monotonic()
    assert _report(tmp_path, "--timeout", "1.5") == 1
    assert time.monotonic() - t0 < 10
    assert "edge-1: failed: still running after 1.5 s" in capsys.readouterr().err


def test_waiting_gives_up_on_a_device_that_never_starts(tmp_path):
    run = tmp_path / "r4"
    _device(run, "edge-near")
    lost = compose_report.wait_for_devices(run, ["edge-near", "edge-mid"], [], timeout_s=30, stale_s=30,
                                           settle_s=0, start_grace_s=0.5, poll_s=0.1, log=lambda m: None)
    assert list(lost) == ["edge-mid"] and "never started" in lost["edge-mid"]


def test_discovery_maps_compose_replica_names_only(monkeypatch):
    names = {"172.18.0.5": "rkdsc-edge-3.rkdsc_default", "172.18.0.6": "rkdsc_edge_12.net",
             "10.1.2.3": "mail-7.example.com", "172.18.0.9": None}
    monkeypatch.setattr(edge_entrypoint, "lookup_a", lambda name, timeout_s=1.0: sorted(names) if name == "edge" else [])
    monkeypatch.setattr(edge_entrypoint, "reverse_dns", lambda ip, timeout_s=1.0: names[ip])
    assert compose_report.discover(["edge"]) == {"edge-3", "edge-12"}
    assert compose_report.discover(["other"]) == set()
