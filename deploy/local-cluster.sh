#!/usr/bin/env bash
# A three-member Ballast cluster on loopback, for trying things out and for development.
#
#   deploy/local-cluster.sh up       build if needed, start three members, wait for a leader
#   deploy/local-cluster.sh status   show the cluster
#   deploy/local-cluster.sh down     stop the members (data is kept; `clean` removes it)
#   deploy/local-cluster.sh clean    stop and remove the data
#
# Environment: BALLAST_LOCAL_DIR (default /tmp/ballast-local), BALLAST_BASE_PORT (default
# 7401: gRPC on 7401-7403, HTTP on 7481-7483), CARGO_PROFILE (default release).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${BALLAST_LOCAL_DIR:-/tmp/ballast-local}"
BASE="${BALLAST_BASE_PORT:-7401}"
PROFILE="${CARGO_PROFILE:-release}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE"
IDS=(1 2 3)

grpc_port() { echo $((BASE + $1 - 1)); }
http_port() { echo $((BASE + 80 + $1 - 1)); }
endpoints() {
  local out=()
  for i in "${IDS[@]}"; do out+=("127.0.0.1:$(grpc_port "$i")"); done
  (IFS=,; echo "${out[*]}")
}
initial_cluster() {
  local out=()
  for i in "${IDS[@]}"; do out+=("$i=127.0.0.1:$(grpc_port "$i")"); done
  (IFS=,; echo "${out[*]}")
}
running() { [[ -f "$DIR/node-$1.pid" ]] && kill -0 "$(cat "$DIR/node-$1.pid")" 2>/dev/null; }

build() {
  if [[ ! -x "$TARGET/ballastd" || ! -x "$TARGET/ballastctl" ]] || [[ -n "$(find "$ROOT/node" "$ROOT/client" "$ROOT/proto" -newer "$TARGET/ballastd" -name '*.rs' -print -quit 2>/dev/null)" ]]; then
    echo "building ballastd and ballastctl ($PROFILE)..."
    local flag=()
    [[ "$PROFILE" == "release" ]] && flag=(--release)
    (cd "$ROOT" && cargo build "${flag[@]}" -p ballast-node -p ballast-client --bins)
  fi
}

ctl() { "$TARGET/ballastctl" --endpoints "$(endpoints)" "$@"; }

up() {
  build
  mkdir -p "$DIR"
  for i in "${IDS[@]}"; do
    if running "$i"; then echo "node $i already running (pid $(cat "$DIR/node-$i.pid"))"; continue; fi
    "$TARGET/ballastd" \
      --node-id "$i" \
      --data-dir "$DIR/node-$i" \
      --listen "127.0.0.1:$(grpc_port "$i")" \
      --http-listen "127.0.0.1:$(http_port "$i")" \
      --initial-cluster "$(initial_cluster)" \
      --cluster-name local \
      >>"$DIR/node-$i.log" 2>&1 &
    echo $! >"$DIR/node-$i.pid"
  done
  echo "data and logs: $DIR"
  # Wait (bounded) until a leader is known, checking rather than sleeping blindly.
  local deadline=$((SECONDS + 30))
  until ctl --timeout 2 status -o json 2>/dev/null | grep -q '"leader_id": [1-9]'; do
    for i in "${IDS[@]}"; do
      if ! running "$i"; then echo "node $i exited; last log lines:" >&2; tail -n 20 "$DIR/node-$i.log" >&2; exit 1; fi
    done
    if (( SECONDS > deadline )); then echo "no leader after 30 s; see $DIR/node-*.log" >&2; exit 1; fi
    sleep 0.2
  done
  echo "endpoints: $(endpoints)"
  echo "metrics:   $(for i in "${IDS[@]}"; do printf 'http://127.0.0.1:%s/metrics ' "$(http_port "$i")"; done)"
  echo "try:       export BALLAST_ENDPOINTS=$(endpoints); $TARGET/ballastctl kv put hello world"
  echo
  ctl status
}

down() {
  for i in "${IDS[@]}"; do
    if running "$i"; then
      local pid
      pid="$(cat "$DIR/node-$i.pid")"
      kill "$pid"
      # Wait (bounded) for a clean stop; SIGKILL after 10 s.
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
      echo "stopped node $i"
    fi
    rm -f "$DIR/node-$i.pid"
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) build; ctl status ;;
  clean) down; rm -rf "$DIR"; echo "removed $DIR" ;;
  *) echo "usage: $0 up|down|status|clean" >&2; exit 2 ;;
esac
