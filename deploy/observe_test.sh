#!/usr/bin/env bash
# Engine test of the live view (compose profile `observe`; `.ci/run` calls it after
# deploy/compose_test.sh; also `bash deploy/observe_test.sh`). From the repository root, through
# the root compose.yaml, like every command users type:
#
#   1. the Docker engine, compose v2 and base images of deploy/compose_test.sh (sourced for its
#      helpers: the engine `docker info` reaches, else one started here under $RKDSC_DOCKER_WORK);
#   2. a local Prometheus image from the distribution's `prometheus` package
#      (deploy/observe/prometheus.Dockerfile, FROM localbase:bookworm, the debootstrap base
#      compose_test.sh makes, else python:3.11-slim), used through RKDSC_PROMETHEUS_IMAGE because
#      no registry can be pulled here; with a registry RKDSC_PROMETHEUS_IMAGE=prom/prometheus:...
#      tests the official one. Grafana is NOT started: Debian packages no grafana and its image
#      cannot be pulled here; its service is only validated (`compose config`) and its
#      provisioning checked by tests/deploy/test_observe.py;
#   3. `compose --profile observe up --wait server basestation prometheus`, Prometheus ready and
#      both scrape targets (the server replica found by DNS on :9101, basestation:9102) up;
#   4. the three edge devices ($RKDSC_OBSERVE_LIMIT images each, default 48) and the report;
#   5. Prometheus's HTTP API (/api/v1/query): rkdsc_frames_total, rkdsc_relay_frames_total,
#      rkdsc_labelled_total / rkdsc_correct_total, rkdsc_link_snr_db and the histograms, with the
#      expected labels (transmitter, task, outcome, job) and values equal to the run's summary
#      (frames per device, accuracy) and the topology (link SNR); then every query of the Grafana
#      dashboard, variables substituted (deploy/observe/dashboard.py live), must answer with data;
#   6. `compose --profile observe down -v`; stops an engine it started, by its PID.
#
# Writes runs/observe-test/report.json (timings, checks). Environment: RKDSC_DOCKER_WORK,
# RKDSC_BUNDLE, RKDSC_KEEP_ENGINE as for compose_test.sh; RKDSC_OBSERVE_LIMIT;
# RKDSC_PROMETHEUS_IMAGE (skip the local build and use that image).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=deploy/compose_test.sh
source deploy/compose_test.sh   # helpers only (it returns before its own test when sourced)
log() { printf '[observe_test %6ss] %s\n' "$(since "$T0")" "$*"; }
export RKDSC_PROJECT=rkdsc-observe-test
export COMPOSE_PROJECT_NAME=$RKDSC_PROJECT COMPOSE_PROFILES=observe
OBS=runs/observe-test
LIMIT=${RKDSC_OBSERVE_LIMIT:-48}
LOCAL_PROM_IMAGE=rkdsc-prometheus-local:latest
declare -A TIMES=()

cleanup() {
  local rc=$?
  set +e
  if [ "$COMPOSE_UP" = 1 ]; then
    if [ "$rc" != 0 ]; then
      log "logs of the failed run:"
      dc logs --no-color --tail 30 2>&1 | sed 's/^/    /'
    fi
    local t=$(now)
    dc down -v --remove-orphans -t 10 >/dev/null 2>&1
    log "compose --profile observe down -v ($(since "$t") s)"
  fi
  if [ "$(id -u)" = 0 ] && [ -d "$OBS" ]; then chown -R 0:0 "$OBS"; fi
  stop_engine
  log "total $(since "$T0") s, exit status $rc"
  exit "$rc"
}
trap cleanup EXIT

# ------------------------------------------------------------------ 1. engine, images
ensure_engine
ensure_compose
ensure_base_image
pick_bundle
dc config -q || die "compose.yaml with the observe profile does not validate"
SERVICES=$(dc config --services | sort | paste -sd' ' -)
for s in prometheus grafana server basestation; do
  [[ " $SERVICES " == *" $s "* ]] || die "the observe profile does not show service $s ($SERVICES)"
done
log "compose --profile observe: services $SERVICES"

t=$(now)
if [ -z "${RKDSC_PROMETHEUS_IMAGE:-}" ]; then
  base=python:3.11-slim
  docker image inspect localbase:bookworm >/dev/null 2>&1 && base=localbase:bookworm
  ctx="$W/prometheus-image"
  rm -rf "$ctx" && mkdir -p "$ctx/certs"
  cp deploy/observe/prometheus.Dockerfile "$ctx/Dockerfile"
  cp /usr/local/share/ca-certificates/*.crt "$ctx/certs/" 2>/dev/null || true   # TLS-inspecting proxies
  touch "$ctx/certs/.keep"
  DOCKER_BUILDKIT=0 docker build -q --build-arg "BASE=$base" -t "$LOCAL_PROM_IMAGE" "$ctx" >"$W/prometheus-build.log" 2>&1 \
    || { tail -n 20 "$W/prometheus-build.log"; die "building the local Prometheus image failed (log: $W/prometheus-build.log)"; }
  export RKDSC_PROMETHEUS_IMAGE=$LOCAL_PROM_IMAGE
  PROM_VERSION=$(docker run --rm "$LOCAL_PROM_IMAGE" --version 2>&1 || true)   # (no `| head`: pipefail + SIGPIPE)
  PROM_VERSION=${PROM_VERSION%%$'\n'*}
  log "local Prometheus image $LOCAL_PROM_IMAGE (FROM $base + Debian package: $PROM_VERSION) in $(since "$t") s"
else
  PROM_VERSION=$RKDSC_PROMETHEUS_IMAGE
  log "Prometheus image: $RKDSC_PROMETHEUS_IMAGE"
fi
TIMES[prometheus_image]=$(since "$t")

t=$(now)
dc build server basestation edge-near >"$W/observe-build.log" 2>&1 \
  || { tail -n 40 "$W/observe-build.log"; die "docker compose build failed (log: $W/observe-build.log)"; }
TIMES[build]=$(since "$t")
log "role images built in ${TIMES[build]} s"

# ------------------------------------------------------------------ 2. the stack + Prometheus
rm -rf "$OBS" && mkdir -p "$OBS"
export RKDSC_RESULTS=../$OBS RKDSC_EDGE_LIMIT=$LIMIT
unset RKDSC_UID RKDSC_GID RKDSC_RUN_ID
export RKDSC_PUBLISH_SERVER_METRICS=$(free_port) RKDSC_PUBLISH_RELAY_METRICS=$(free_port) \
  RKDSC_PUBLISH_RELAY=$(free_port) RKDSC_PUBLISH_PROMETHEUS=$(free_port) RKDSC_PUBLISH_GRAFANA=$(free_port)
PROM=http://127.0.0.1:$RKDSC_PUBLISH_PROMETHEUS
COMPOSE_UP=1
dc down -v --remove-orphans -t 5 >/dev/null 2>&1 || true   # leftovers of an interrupted run

t=$(now)
dc up -d --wait server basestation prometheus >"$W/observe-up.log" 2>&1 \
  || { cat "$W/observe-up.log"; die "server/basestation/prometheus did not start"; }
http_get() { "$PY" -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "$1"; }
for _ in $(seq 1 120); do http_get "$PROM/-/ready" >/dev/null 2>&1 && break; sleep 0.5; done
http_get "$PROM/-/ready" >/dev/null 2>&1 || die "Prometheus at $PROM is not ready after 60 s"
TIMES[stack_ready]=$(since "$t")
log "server, relay healthy and Prometheus ready ($PROM) in ${TIMES[stack_ready]} s"

t=$(now)
targets_up() {
  http_get "$PROM/api/v1/targets?state=active" | "$PY" -c '
import json, sys
ts = json.load(sys.stdin)["data"]["activeTargets"]
got = sorted((t["labels"]["job"], t["scrapeUrl"], t["health"]) for t in ts)
print(" ".join(f"{j}={h}" for j, _, h in got))
# the relay by name; the one server replica by its address (DNS discovery of `server`)
relay = [h for j, u, h in got if j == "rkdsc-relay" and u == "http://basestation:9102/metrics"]
server = [h for j, u, h in got if j == "rkdsc-server" and u.endswith(":9101/metrics")]
sys.exit(0 if relay == ["up"] and server == ["up"] and len(got) == 2 else 1)'
}
for _ in $(seq 1 60); do STATE=$(targets_up 2>/dev/null) && break; sleep 0.5; done
STATE=$(targets_up) || die "Prometheus scrape targets not both up after 30 s: $STATE"
TIMES[targets_up]=$(since "$t")
log "Prometheus scrapes the server replica (DNS discovery, :9101) and basestation:9102: $STATE (${TIMES[targets_up]} s)"

# ------------------------------------------------------------------ 3. a run of the three devices
t=$(now)
timeout "$EDGE_TIMEOUT_S" docker compose up --no-color edge-near edge-mid edge-far report 2>&1 \
  | grep -E '(report|edge-[a-z]+|run)-1 +\|' | sed 's/^/    /' || true
for svc in run edge-near edge-mid edge-far report; do
  cid=$(dc ps -aq "$svc")
  [ -n "$cid" ] || die "no container for $svc"
  st=$(docker inspect -f '{{.State.Status}} {{.State.ExitCode}}' "$cid")
  [ "$st" = "exited 0" ] || die "$svc: $st (expected: exited 0)"
done
TIMES[edges]=$(since "$t")
log "edge devices ($LIMIT images each) and report done (exit 0) in ${TIMES[edges]} s"

# ------------------------------------------------------------------ 4. Prometheus's HTTP API
t=$(now)
"$PY" - "$PROM" "$OBS" "$PROM_VERSION" <<'PYEOF'
import json, pathlib, sys, time
sys.path.insert(0, "deploy/observe")
import dashboard as dash
from rkdsc.common.config import load_config

prom, out, version = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3]
summary = json.loads((out / "summary.json").read_text())
rows = {r["id"]: r for r in summary["transmitters"]}
cfg = load_config("deploy/topology.toml", env={})
links = {t.id: t for t in cfg.transmitters}
assert set(rows) == set(links), f"summary lists {sorted(rows)}, topology {sorted(links)}"
total = sum(r["answered"] for r in rows.values())
q = lambda e: dash.instant_query(prom, e)
checks, problems = [], []

def check(ok, what):
    (checks if ok else problems).append(what)
    print(("ok   " if ok else "FAIL ") + what)

# the last frames are in Prometheus once a scrape after the run has them
deadline = time.time() + 30
while time.time() < deadline:
    got = q("sum(rkdsc_labelled_total)")
    if got and float(got[0]["value"][1]) == total:
        break
    time.sleep(1)
time.sleep(5)   # two more scrapes: every series has samples enough for the rate() panels

def by(expr, *labels):
    return {tuple(s["metric"].get(l, "") for l in labels): float(s["value"][1]) for s in q(expr)}

frames = q('rkdsc_frames_total')
check(bool(frames), f"rkdsc_frames_total: {len(frames)} series")
for s in frames:
    m = s["metric"]
    ok = (m.get("job") == "rkdsc-server" and m.get("instance", "").endswith(":9101") and m.get("role") == "server"
          and m.get("transmitter") in links and m.get("task") == links[m["transmitter"]].task
          and m.get("outcome") in {"ok", "invalid", "rejected", "draining", "failed"})
    check(ok, f"rkdsc_frames_total labels {dict(sorted(m.items()))}")
ok_frames = by('sum by (transmitter, task) (rkdsc_frames_total{outcome="ok"})', "transmitter", "task")
relay_ok = by('sum by (transmitter) (rkdsc_relay_frames_total{outcome="ok", job="rkdsc-relay"})', "transmitter")
labelled = by("sum by (transmitter, task) (rkdsc_labelled_total)", "transmitter", "task")
correct = by("sum by (transmitter, task) (rkdsc_correct_total)", "transmitter", "task")
snr = by('rkdsc_link_snr_db{job="rkdsc-relay"}', "transmitter")
for tid, r in rows.items():
    task = links[tid].task
    check(ok_frames.get((tid, task)) == r["answered"] == r["images"],
          f"{tid}: rkdsc_frames_total{{outcome=\"ok\"}} = {ok_frames.get((tid, task))}, answered {r['answered']} of {r['images']}")
    check(relay_ok.get((tid,)) == r["answered"], f"{tid}: rkdsc_relay_frames_total{{outcome=\"ok\"}} = {relay_ok.get((tid,))}")
    acc = correct.get((tid, task), -1) / max(labelled.get((tid, task), 0), 1)
    check(labelled.get((tid, task)) == r["images"] and abs(acc - r["accuracy"]) < 1e-9,
          f"{tid}: rkdsc_correct_total / rkdsc_labelled_total = {acc:.4f}, summary accuracy {r['accuracy']:.4f}")
    want = links[tid].snr_db + getattr(links[tid], "path_gain_db", 0.0)
    check(snr.get((tid,)) is not None and abs(snr[(tid,)] - want) < 1e-9,
          f"{tid}: rkdsc_link_snr_db = {snr.get((tid,))} (topology {want})")
rt = by("sum(rkdsc_relay_roundtrip_seconds_count)")
check(rt.get(()) == total, f"rkdsc_relay_roundtrip_seconds_count = {rt.get(())} (frames {total})")
bs = by("sum by (task) (rkdsc_batch_size_sum)", "task")
check(sum(bs.values()) == total, f"rkdsc_batch_size_sum = {bs} (frames {total})")
b = q("sum by (le) (rkdsc_batch_size_bucket)")
check(len(b) >= 10 and all("le" in s["metric"] for s in b), f"rkdsc_batch_size_bucket: {len(b)} buckets")
names = {s["metric"]["__name__"] for s in q('count by (__name__) ({__name__=~"rkdsc_.+"})')}
used = set()
for _, e in dash.queries(dash.load()):
    used |= dash.analyze(e).metrics
check((used - {"up"}) <= names, f"every metric the dashboard uses is in Prometheus (missing: {sorted(used - {'up'} - names)})")
print(f"{len(names)} rkdsc_* series names in Prometheus: {' '.join(sorted(names))}")
(out / "prometheus-checks.json").write_text(json.dumps(
    {"prometheus": version, "ok": not problems, "checks": checks, "problems": problems,
     "series_names": sorted(names)}, indent=2) + "\n")
sys.exit(1 if problems else 0)
PYEOF
TIMES[api_checks]=$(since "$t")
log "Prometheus HTTP API: rkdsc_* series with the expected labels and values (${TIMES[api_checks]} s)"

t=$(now)
"$PY" deploy/observe/dashboard.py live "$PROM" | tee "$OBS/dashboard-live.txt" | sed 's/^/    /' \
  || true
grep -q '^FAIL\|^EMPTY' "$OBS/dashboard-live.txt" && die "dashboard queries failed or came back empty (see above)"
grep -qE '^([0-9]+)/\1 dashboard queries answered with data$' "$OBS/dashboard-live.txt" \
  || die "dashboard live check did not finish"
TIMES[dashboard_live]=$(since "$t")
log "every Grafana dashboard query answered with data (${TIMES[dashboard_live]} s)"
log "grafana: not started (no image here; Debian packages no grafana); service validated by compose config"

# ------------------------------------------------------------------ 5. teardown
t=$(now)
dc down -v --remove-orphans -t 10 >/dev/null 2>&1 || die "compose down failed"
COMPOSE_UP=0
TIMES[teardown]=$(since "$t")
log "compose --profile observe down -v in ${TIMES[teardown]} s"
if [ "$(id -u)" = 0 ]; then chown -R 0:0 "$OBS"; fi
if [ -n "$STARTED_PID" ] && [ "${RKDSC_KEEP_ENGINE:-0}" != 1 ]; then
  kill "$STARTED_PID"
  for _ in $(seq 1 60); do kill -0 "$STARTED_PID" 2>/dev/null || break; sleep 0.5; done
  kill -0 "$STARTED_PID" 2>/dev/null && die "dockerd (PID $STARTED_PID) did not stop within 30 s"
  log "stopped dockerd (PID $STARTED_PID)"
  STARTED_PID=""
fi
TIMES[total]=$(since "$T0")
TIMES_JSON=$(for k in "${!TIMES[@]}"; do printf '"%s": %s\n' "$k" "${TIMES[$k]}"; done | paste -sd, -)
"$PY" - "$OBS" "{$TIMES_JSON}" "$ENGINE_MODE" <<'PYEOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
checks = json.loads((out / "prometheus-checks.json").read_text())
report = {"ok": checks["ok"], "engine": sys.argv[3], "timings_s": json.loads(sys.argv[2]),
          "grafana": "not started (no image can be pulled or built here); validated by compose config",
          **checks, "dashboard_live": (out / "dashboard-live.txt").read_text().splitlines()[-1]}
(out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
PYEOF
log "passed in ${TIMES[total]} s; report $OBS/report.json"
