#!/usr/bin/env bash
# Rolling upgrade on loopback, under load: three members start on the OLD build's ballastd,
# a writer puts keys one after another (recording each acknowledged one), and the members
# are restarted one at a time onto the NEW build's ballastd, each waited for until it serves
# the latest acknowledged write. At the end every acknowledged key must read back, from the
# new members, with its value. Exit status 0 only then.
#
#   deploy/rolling-upgrade-check.sh OLD_BIN_DIR NEW_BIN_DIR
#
# OLD_BIN_DIR and NEW_BIN_DIR each hold a `ballastd`; `ballastctl` is taken from NEW_BIN_DIR.
# Environment: ROLL_DIR (default /tmp/ballast-rolling, removed first), ROLL_BASE_PORT
# (default 7501), ROLL_WRITES_BETWEEN (acknowledged writes between restarts, default 300).
set -euo pipefail

OLD="${1:?usage: $0 OLD_BIN_DIR NEW_BIN_DIR}"
NEW="${2:?usage: $0 OLD_BIN_DIR NEW_BIN_DIR}"
DIR="${ROLL_DIR:-/tmp/ballast-rolling}"
BASE="${ROLL_BASE_PORT:-7501}"
BETWEEN="${ROLL_WRITES_BETWEEN:-300}"
CTL="$NEW/ballastctl"
IDS=(1 2 3)

port() { echo $((BASE + $1 - 1)); }
endpoints() { echo "127.0.0.1:$(port 1),127.0.0.1:$(port 2),127.0.0.1:$(port 3)"; }
initial() { echo "1=127.0.0.1:$(port 1),2=127.0.0.1:$(port 2),3=127.0.0.1:$(port 3)"; }
ctl() { "$CTL" --endpoints "$(endpoints)" "$@"; }

start() { # id bin_dir
  "$2/ballastd" --node-id "$1" --data-dir "$DIR/node-$1" --listen "127.0.0.1:$(port "$1")" \
    --http-listen "127.0.0.1:$(($(port "$1") + 80))" --initial-cluster "$(initial)" \
    --cluster-name rolling >>"$DIR/node-$1.log" 2>&1 &
  echo $! >"$DIR/node-$1.pid"
}

stop() { # id: SIGTERM, then wait for the process to end (bounded)
  local pid; pid=$(cat "$DIR/node-$1.pid")
  kill "$pid"
  local deadline=$((SECONDS + 20))
  while kill -0 "$pid" 2>/dev/null; do
    (( SECONDS < deadline )) || { echo "member $1 did not stop" >&2; kill -9 "$pid"; }
    sleep 0.1
  done
}

acked() { wc -l <"$DIR/acked" | tr -d ' '; }

cleanup() {
  [[ -n "${WRITER:-}" ]] && kill "$WRITER" 2>/dev/null || true
  for i in "${IDS[@]}"; do [[ -f "$DIR/node-$i.pid" ]] && kill "$(cat "$DIR/node-$i.pid")" 2>/dev/null || true; done
}
trap cleanup EXIT

rm -rf "$DIR"; mkdir -p "$DIR"; : >"$DIR/acked"
for i in "${IDS[@]}"; do start "$i" "$OLD"; done
deadline=$((SECONDS + 30))
until ctl --timeout 2 status -o json 2>/dev/null | grep -q '"leader_id": [1-9]'; do
  (( SECONDS < deadline )) || { echo "no leader on the old build" >&2; exit 1; }
  sleep 0.2
done
echo "old build up: $(initial)"

# The writer: one put at a time; a key counts once its put was acknowledged.
( n=0; while true; do n=$((n + 1))
    if ctl --timeout 5 kv put "roll/$n" "v$n" >/dev/null 2>&1; then echo "$n" >>"$DIR/acked"; fi
  done ) &
WRITER=$!

wait_acked() { # count
  local deadline=$((SECONDS + 120))
  until (( $(acked) >= $1 )); do
    (( SECONDS < deadline )) || { echo "writes stalled at $(acked) acknowledged" >&2; exit 1; }
    sleep 0.2
  done
}

for i in "${IDS[@]}"; do
  wait_acked $(( $(acked) + BETWEEN ))
  echo "restarting member $i onto the new build ($(acked) writes acknowledged so far)"
  stop "$i"
  start "$i" "$NEW"
  # Serving again: a serializable read on this member sees the latest acknowledged write.
  last=$(tail -n 1 "$DIR/acked")
  deadline=$((SECONDS + 60))
  until "$CTL" --endpoints "127.0.0.1:$(port "$i")" --timeout 2 kv get --serializable "roll/$last" 2>/dev/null | grep -q "v$last"; do
    if ! kill -0 "$(cat "$DIR/node-$i.pid")" 2>/dev/null; then
      echo "member $i exited on the new build:" >&2; tail -n 20 "$DIR/node-$i.log" >&2; exit 1
    fi
    (( SECONDS < deadline )) || { echo "member $i did not catch up" >&2; tail -n 20 "$DIR/node-$i.log" >&2; exit 1; }
    sleep 0.2
  done
  [[ -d "$DIR/node-$i/log" && -f "$DIR/node-$i/raft" ]] || { echo "member $i: log not moved" >&2; exit 1; }
done
wait_acked $(( $(acked) + BETWEEN ))
kill "$WRITER"; wait "$WRITER" 2>/dev/null || true; WRITER=

# Every acknowledged write, read back linearizably from the upgraded cluster.
total=$(acked); missing=0
while read -r n; do
  if ! ctl kv get "roll/$n" 2>/dev/null | grep -q "v$n"; then missing=$((missing + 1)); echo "lost: roll/$n" >&2; fi
done <"$DIR/acked"
grep -h "moved the log from sled" "$DIR"/node-*.log | sed -e 's/\x1b\[[0-9;]*m//g' -e 's/^/  /' || true
echo "$total acknowledged writes, $missing missing after the rolling upgrade"
(( missing == 0 ))
