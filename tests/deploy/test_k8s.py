"""The Kubernetes manifests (deploy/k8s): every overlay renders with `kubectl kustomize`, every
rendered document validates against the Kubernetes API schema (kubernetes-validate, strict:
unknown fields are errors), and the pieces agree with each other and with the topology
ConfigMap: ports, probes, Service names, the edge Job's size, the HPA's target and metric,
the security context and resources of every container. Plus the edge entry point's
JOB_COMPLETION_INDEX -> transmitter id mapping (no kubectl needed).

Needs `kubectl` (with its built-in kustomize) on PATH: without it the rendering tests are
skipped with that reason. kubernetes-validate is a dev dependency (pyproject.toml).
"""
from __future__ import annotations

import copy
import functools
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from rkdsc.common.config import ENV_KEYS, load_config

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
KUBE_VERSION = "1.32.0"  # the API schema the manifests must satisfy (kubernetes-validate)
UID = 10001  # the images' user rkdsc (deploy/Dockerfile)
NAMESPACE = "rkdsc"
TARGETS = ("base", "overlays/dev", "overlays/scale")
WORKLOAD_KINDS = ("Deployment", "Job")
CLUSTER_SCOPED = ("Namespace",)

sys.path.insert(0, str(DEPLOY))
import edge_entrypoint  # noqa: E402

KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not on PATH: cannot render deploy/k8s "
                                   "with `kubectl kustomize` (install kubectl >= 1.27)")


# ------------------------------------------------------------------ rendering
@functools.lru_cache(maxsize=None)
def _render(target: str) -> tuple[dict, ...]:
    proc = subprocess.run([KUBECTL, "kustomize", str(K8S / target)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"kubectl kustomize {target} failed:\n{proc.stderr}"
    docs = tuple(d for d in yaml.safe_load_all(proc.stdout) if d)
    assert docs, f"kubectl kustomize {target} rendered nothing"
    return docs


@pytest.fixture(params=TARGETS)
def rendered(request) -> tuple[str, list[dict]]:
    if KUBECTL is None:
        pytest.skip("kubectl is not on PATH: cannot render deploy/k8s with `kubectl kustomize`")
    return request.param, copy.deepcopy(list(_render(request.param)))


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in by_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[d['metadata']['name'] for d in found]}"
    return found[0]


def workload(docs: list[dict], component: str) -> dict:
    found = [d for d in docs if d["kind"] in WORKLOAD_KINDS
             and d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == component]
    assert len(found) == 1, f"expected one workload of component {component!r}, found {len(found)}"
    return found[0]


def pod_spec(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"]


def containers(doc: dict) -> list[dict]:
    spec = pod_spec(doc)
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def main_container(doc: dict) -> dict:
    (c,) = pod_spec(doc)["containers"]
    return c


def port(container: dict, name: str) -> int:
    for p in container.get("ports", []):
        if p["name"] == name:
            return p["containerPort"]
    raise AssertionError(f"container {container['name']} has no port named {name!r}")


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def selects(service: dict, doc: dict) -> bool:
    sel = service["spec"].get("selector") or {}
    labels = doc["spec"]["template"]["metadata"]["labels"]
    return bool(sel) and all(labels.get(k) == v for k, v in sel.items())


def topology(docs: list[dict], tmp_path: Path, env: dict[str, str] | None = None):
    """The rendered ConfigMap's topology, loaded with load_config (as the pods load it)."""
    cm = one(docs, "ConfigMap")
    path = tmp_path / "topology.toml"
    path.write_text(cm["data"]["topology.toml"], encoding="utf-8")
    return load_config(path, env=env or {})


def hostport(value: str) -> tuple[str, int]:
    host, _, p = value.rpartition(":")
    return host, int(p)


# ------------------------------------------------------------------ schema validation
@needs_kubectl
@pytest.mark.parametrize("target", TARGETS)
def test_every_document_validates_against_the_kubernetes_schema(target):
    try:
        import kubernetes_validate
    except ImportError:
        pytest.fail("kubernetes-validate is not installed; it is in the dev extra: pip install -e '.[dev]'")
    docs = _render(target)
    problems = []
    for doc in docs:
        try:
            version = kubernetes_validate.validate(copy.deepcopy(doc), KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at "
                            f"{'.'.join(str(p) for p in exc.path)}")
        else:
            assert version == "1.32"
    assert not problems, f"{target}: documents that are not valid Kubernetes {KUBE_VERSION}:\n" + "\n".join(problems)


@needs_kubectl
def test_the_overlays_render_what_they_should():
    kinds = {t: sorted(d["kind"] for d in _render(t)) for t in TARGETS}
    core = sorted(["Namespace", "ConfigMap", "Service", "Service", "Deployment", "Deployment", "Job"])
    assert kinds["base"] == core
    assert kinds["overlays/dev"] == core
    assert kinds["overlays/scale"] == sorted(core + ["HorizontalPodAutoscaler", "PodDisruptionBudget"])


# ------------------------------------------------------------------ namespace, security, resources
def test_everything_is_in_the_restricted_namespace(rendered):
    _, docs = rendered
    ns = one(docs, "Namespace")
    assert ns["metadata"]["name"] == NAMESPACE
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for d in docs:
        if d["kind"] not in CLUSTER_SCOPED:
            assert d["metadata"].get("namespace") == NAMESPACE, f"{d['kind']}/{d['metadata']['name']}"


def test_every_pod_and_container_is_non_root_and_locked_down(rendered):
    target, docs = rendered
    pods = [d for d in docs if d["kind"] in WORKLOAD_KINDS]
    assert len(pods) == 3
    for d in pods:
        where = f"{target}: {d['kind']}/{d['metadata']['name']}"
        spec = pod_spec(d)
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] == UID and psc["runAsGroup"] == UID, where
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert spec["automountServiceAccountToken"] is False, where
        assert spec["enableServiceLinks"] is False, f"{where}: injected *_PORT variables could clash with RKDSC_*"
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), where
        for v in spec["volumes"]:
            assert set(v) - {"name"} <= {"configMap", "emptyDir"}, f"{where}: volume {v}"
        mounts_needed = {"/tmp"}
        for c in containers(d):
            cw = f"{where}: container {c['name']}"
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] == UID, cw
            assert sc["allowPrivilegeEscalation"] is False, cw
            assert sc["readOnlyRootFilesystem"] is True, cw
            assert sc["capabilities"] == {"drop": ["ALL"]}, cw
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, cw
            assert not sc.get("privileged"), cw
            if c in spec["containers"]:
                mounted = {m["mountPath"] for m in c.get("volumeMounts", [])}
                assert mounts_needed <= mounted, f"{cw}: writable /tmp (emptyDir) under a read-only root"


_UNITS = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def quantity(q) -> float:
    m = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(q))
    assert m and m.group(2) in _UNITS, f"unexpected quantity {q!r}"
    return float(m.group(1)) * _UNITS[m.group(2)]


def test_every_container_has_requests_and_limits(rendered):
    target, docs = rendered
    for d in docs:
        if d["kind"] not in WORKLOAD_KINDS:
            continue
        for c in containers(d):
            res, cw = c["resources"], f"{target}: {d['metadata']['name']}/{c['name']}"
            for r in ("cpu", "memory"):
                assert r in res["requests"] and r in res["limits"], f"{cw}: {r} requests and limits"
                assert quantity(res["requests"][r]) <= quantity(res["limits"][r]), f"{cw}: {r} request > limit"


# ------------------------------------------------------------------ topology, ports, probes, Services
def test_the_topology_configmap_parses_and_every_pod_mounts_it(rendered, tmp_path):
    target, docs = rendered
    cm = one(docs, "ConfigMap")
    assert cm["metadata"]["name"].startswith("rkdsc-topology-"), "generated, with a content hash"
    cfg = topology(docs, tmp_path)
    assert cfg.transmitters, f"{target}: a topology without transmitters"
    assert str(cfg.root) == "/app" and str(cfg.bundle.path) == "/app/deploy/bundle"
    for d in docs:
        if d["kind"] not in WORKLOAD_KINDS:
            continue
        vols = {v["name"]: v for v in pod_spec(d)["volumes"]}
        assert vols["topology"]["configMap"]["name"] == cm["metadata"]["name"]
        c = main_container(d)
        assert env_of(c)["RKDSC_CONFIG"] == "/etc/rkdsc/topology.toml"
        assert {"name": "topology", "mountPath": "/etc/rkdsc", "readOnly": True} in c["volumeMounts"]


def _check_service_pod(docs, component: str, port_no: int, metrics_port: int) -> dict:
    d = workload(docs, component)
    c = main_container(d)
    assert port(c, "grpc") == port_no, f"{component}: containerPort grpc vs the topology's port"
    assert port(c, "metrics") == metrics_port, f"{component}: containerPort metrics vs the topology"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["grpc"]["port"] == port_no, f"{component}: {probe} must be a gRPC probe on {port_no}"
        assert "service" not in c[probe]["grpc"], "the overall health (\"\") the services set"
    ann = d["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/path"] == "/metrics"
    assert int(ann["prometheus.io/port"]) == metrics_port
    return d


def test_ports_probes_and_services_match_the_topology(rendered, tmp_path):
    target, docs = rendered
    file_cfg = topology(docs, tmp_path)
    services = by_kind(docs, "Service")

    # server: its pod's env (bind) applied to the file, as the server process does
    server = workload(docs, "server")
    assert server["kind"] == "Deployment"
    scfg = topology(docs, tmp_path, {k: v for k, v in env_of(main_container(server)).items() if k in ENV_KEYS})
    assert scfg.server.host == "0.0.0.0" and scfg.server.port == file_cfg.server.port
    _check_service_pod(docs, "server", scfg.server.port, scfg.server.metrics_port)

    # relay: binds all interfaces on the topology's port
    relay = workload(docs, "relay")
    assert relay["kind"] == "Deployment" and relay["spec"]["replicas"] == 1, "one relay per cell"
    rcfg = topology(docs, tmp_path, {k: v for k, v in env_of(main_container(relay)).items() if k in ENV_KEYS})
    assert rcfg.basestation.host == "0.0.0.0" and rcfg.basestation.port == file_cfg.basestation.port
    _check_service_pod(docs, "relay", rcfg.basestation.port, rcfg.basestation.metrics_port)

    # the relay reaches the server through the headless Service that selects the server pods
    host, p = hostport(file_cfg.basestation.server_addr)
    headless = one(docs, "Service", host)
    assert headless["spec"]["clusterIP"] == "None", "client-side load balancing: one DNS record per server pod"
    assert selects(headless, server) and not selects(headless, relay)
    assert not headless["spec"].get("publishNotReadyAddresses")
    grpc_port = next(sp for sp in headless["spec"]["ports"] if sp["name"] == "grpc")
    assert grpc_port["port"] == p and grpc_port["targetPort"] in ("grpc", scfg.server.port)

    # the edge devices reach the relay through its Service (the topology's basestation.host)
    edge = workload(docs, "edge")
    ecfg = topology(docs, tmp_path, {k: v for k, v in env_of(main_container(edge)).items() if k in ENV_KEYS})
    rhost, rport = hostport(ecfg.relay_addr)
    relay_svc = one(docs, "Service", rhost)
    assert relay_svc["spec"].get("clusterIP") != "None"
    assert selects(relay_svc, relay) and not selects(relay_svc, server)
    sp = next(sp for sp in relay_svc["spec"]["ports"] if sp["name"] == "grpc")
    assert sp["port"] == rport and sp["targetPort"] in ("grpc", rcfg.basestation.port)
    # ... and wait for it to be SERVING first
    (init,) = pod_spec(edge)["initContainers"]
    assert f"deploy/healthcheck.py {ecfg.relay_addr} " in " ".join(init["command"] + init["args"])

    assert {s["metadata"]["name"] for s in services} == {host, rhost}


def test_the_edge_fleet_is_an_indexed_job_of_the_topology_transmitters(rendered, tmp_path):
    target, docs = rendered
    cfg = topology(docs, tmp_path)
    job = one(docs, "Job")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == len(cfg.transmitters), (
        f"{target}: the Job has {spec['completions']} completions, the topology ConfigMap "
        f"{len(cfg.transmitters)} transmitters (pod i is the i-th transmitter)")
    assert spec["parallelism"] == spec["completions"], "every device of the cell at once"
    assert pod_spec(job)["restartPolicy"] == "Never"
    c = main_container(job)
    env = {e["name"]: e for e in c["env"]}
    assert "RKDSC_EDGE_ID" not in env and "RKDSC_EDGE_ID_PATTERN" not in env, "the id comes from the index"
    assert env["RKDSC_RUN_ID"]["value"] == "$(RKDSC_JOB_NAME)-$(RKDSC_JOB_UID)"
    names = list(env)
    assert names.index("RKDSC_JOB_NAME") < names.index("RKDSC_RUN_ID") > names.index("RKDSC_JOB_UID")
    assert c["livenessProbe"]["exec"]["command"][:3] == ["python", "deploy/healthcheck.py", "--heartbeat"]
    # every index maps to a distinct transmitter the relay knows (what the entry point does)
    path = tmp_path / "topology.toml"
    ids = [edge_entrypoint.transmitter_id({"JOB_COMPLETION_INDEX": str(i), "RKDSC_CONFIG": str(path)})
           for i in range(spec["completions"])]
    assert ids == [t.id for t in cfg.transmitters]


# ------------------------------------------------------------------ overlays
@needs_kubectl
def test_dev_overlay_one_server_local_images():
    docs = list(_render("overlays/dev"))
    assert one(docs, "Deployment", "rkdsc-server")["spec"]["replicas"] == 1
    assert not by_kind(docs, "HorizontalPodAutoscaler")
    for d in docs:
        if d["kind"] in WORKLOAD_KINDS:
            for c in containers(d):
                assert c["imagePullPolicy"] == "IfNotPresent", c["name"]
                assert re.fullmatch(r"rkdsc-(server|basestation|edge):latest", c["image"]), c["image"]
    edge = one(docs, "Job")
    assert env_of(main_container(edge))["RKDSC_EDGE_LIMIT"] == "50"


@needs_kubectl
def test_scale_overlay_replicas_fleet_and_autoscaling(tmp_path):
    docs = list(_render("overlays/scale"))
    server = one(docs, "Deployment", "rkdsc-server")
    assert server["spec"]["replicas"] >= 2
    cfg = topology(docs, tmp_path)
    assert len(cfg.transmitters) == one(docs, "Job")["spec"]["completions"] == 16
    assert [t.id for t in cfg.transmitters] == [f"edge-{i}" for i in range(16)]
    hpa = one(docs, "HorizontalPodAutoscaler")
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["apiVersion"], ref["kind"], ref["name"]) == ("apps/v1", "Deployment", server["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == adapter_metric_name()
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= server["spec"]["template"]["metadata"]["labels"].items()


def adapter_metric_name() -> str:
    values = yaml.safe_load((K8S / "components/autoscale/prometheus-adapter-values.yaml").read_text())
    (rule,) = values["rules"]["custom"]
    return rule["name"]["as"]


def test_the_adapter_rule_derives_the_hpa_metric_from_the_servers_queue_histogram():
    from rkdsc.common.metrics import ServerMetrics

    exported = {m.name for m in ServerMetrics().registry.collect()}
    assert "rkdsc_queue_seconds" in exported, "the server's batching-queue histogram"
    values = yaml.safe_load((K8S / "components/autoscale/prometheus-adapter-values.yaml").read_text())
    (rule,) = values["rules"]["custom"]
    assert rule["seriesQuery"].startswith("rkdsc_queue_seconds_count{")
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
    assert "rkdsc_queue_seconds_sum{<<.LabelMatchers>>}" in rule["metricsQuery"]
    assert "rkdsc_queue_seconds_count{<<.LabelMatchers>>}" in rule["metricsQuery"]
    hpa = yaml.safe_load((K8S / "components/autoscale/hpa.yaml").read_text())
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == rule["name"]["as"] == adapter_metric_name()


def test_the_scale_topology_differs_from_the_base_only_in_its_transmitters():
    base = tomllib.loads((K8S / "base/topology.toml").read_text())
    scale = tomllib.loads((K8S / "overlays/scale/topology.toml").read_text())
    for key in set(base) | set(scale):
        if key != "transmitters":
            assert scale.get(key) == base.get(key), f"[{key}] of the scale topology differs from the base's"
    assert len(scale["transmitters"]) == 16


def test_the_compose_topology_and_the_base_share_the_link_settings():
    """The base's devices are the compose demo's (same ids and links), only the endpoints differ."""
    compose = tomllib.loads((DEPLOY / "topology.toml").read_text())
    base = tomllib.loads((K8S / "base/topology.toml").read_text())
    assert base["transmitters"] == compose["transmitters"]


# ------------------------------------------------------------------ edge_entrypoint: index -> id
@pytest.fixture
def topo(tmp_path) -> Path:
    path = tmp_path / "topology.toml"
    path.write_text('[bundle]\npath = "b"\n' + "".join(f'[[transmitters]]\nid = "{t}"\n' for t in ("a", "b", "c")))
    return path


def test_job_completion_index_picks_the_ith_transmitter(topo):
    env = {"RKDSC_CONFIG": str(topo)}
    assert [edge_entrypoint.transmitter_id({**env, "JOB_COMPLETION_INDEX": str(i)}) for i in range(3)] == ["a", "b", "c"]
    # an explicit id still wins
    assert edge_entrypoint.transmitter_id({**env, "JOB_COMPLETION_INDEX": "1", "RKDSC_EDGE_ID": "c"}) == "c"


@pytest.mark.parametrize("index,message", [
    ("3", "JOB_COMPLETION_INDEX=3 is out of range: the topology {path} has 3 transmitter(s): a, b, c "
          "(indexes 0..2); make the Job's completions at most 3"),
    ("-1", "JOB_COMPLETION_INDEX='-1': expected an integer >= 0"),
    ("x", "JOB_COMPLETION_INDEX='x': expected an integer >= 0"),
])
def test_a_bad_index_is_a_clear_error(topo, index, message):
    with pytest.raises(edge_entrypoint.EdgeIdError) as err:
        edge_entrypoint.transmitter_id({"RKDSC_CONFIG": str(topo), "JOB_COMPLETION_INDEX": index})
    assert message.format(path=topo) in str(err.value)


def test_an_id_pattern_must_name_a_listed_transmitter(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text('[bundle]\npath = "b"\n' + "".join(f'[[transmitters]]\nid = "edge-{i}"\n' for i in range(2)))
    env = {"RKDSC_CONFIG": str(path), "RKDSC_EDGE_ID_PATTERN": "edge-{index}"}
    assert edge_entrypoint.transmitter_id({**env, "JOB_COMPLETION_INDEX": "1"}) == "edge-1"
    with pytest.raises(edge_entrypoint.EdgeIdError, match=r"-> id 'edge-2' .* does not list \(the relay would refuse it\)"):
        edge_entrypoint.transmitter_id({**env, "JOB_COMPLETION_INDEX": "2"})
    with pytest.raises(edge_entrypoint.EdgeIdError, match=r"expected \{index\} in it"):
        edge_entrypoint.transmitter_id({**env, "RKDSC_EDGE_ID_PATTERN": "edge", "JOB_COMPLETION_INDEX": "0"})


def test_an_unreadable_topology_is_named(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(edge_entrypoint.EdgeIdError, match=f"cannot read the topology {re.escape(str(missing))}"):
        edge_entrypoint.transmitter_id({"RKDSC_CONFIG": str(missing), "JOB_COMPLETION_INDEX": "0"})


def test_the_entrypoint_exits_2_with_the_reason(topo, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "RKDSC_CONFIG": str(topo), "JOB_COMPLETION_INDEX": "7",
           "RKDSC_OUT": str(tmp_path / "out")}
    proc = subprocess.run([sys.executable, str(DEPLOY / "edge_entrypoint.py")], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert "edge entrypoint: JOB_COMPLETION_INDEX=7 is out of range" in proc.stderr
    assert not (tmp_path / "out").exists(), "nothing is started or written for an unknown device"


def test_job_completion_index_reaches_the_devices_of_a_fleet(tmp_path):
    """The entrypoint's stdlib reading of [[fleets]] lists the ids the config expands, in order."""
    path = tmp_path / "t.toml"
    path.write_text('[bundle]\npath = "b"\n[[transmitters]]\nid = "a"\n'
                    '[[fleets]]\nname = "city"\nid_pattern = "dev-{index:03d}"\ncount = 20\n')
    assert edge_entrypoint.topology_ids(str(path)) == [t.id for t in load_config(path, env={}).transmitters]
    env = {"RKDSC_CONFIG": str(path)}
    assert edge_entrypoint.transmitter_id({**env, "JOB_COMPLETION_INDEX": "5"}) == "dev-004"
    assert edge_entrypoint.transmitter_id({**env, "RKDSC_EDGE_ID_PATTERN": "dev-00{index}",
                                           "JOB_COMPLETION_INDEX": "7"}) == "dev-007"
