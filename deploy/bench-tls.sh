#!/usr/bin/env bash
# What mutual TLS costs: three release members on loopback (ports 17601-17603), once in
# plaintext and once with mutual TLS (a CA and certificates from `ballastctl certs`), each
# measured by `ballastctl bench` (put and linearizable get at concurrency 1, 16, 64).
#
#   deploy/bench-tls.sh            both, one after the other
#   deploy/bench-tls.sh tls        only one mode (plain or tls)
#
# Builds the release binaries when missing. Data under /tmp/ballast-bench-tls-<mode>.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
B="${CARGO_TARGET_DIR:-$ROOT/target}/release"
if [[ ! -x "$B/ballastd" || ! -x "$B/ballastctl" ]]; then
  (cd "$ROOT" && cargo build --release -p ballast-node -p ballast-client --bins)
fi
EP=127.0.0.1:17601,127.0.0.1:17602,127.0.0.1:17603
IC=1=127.0.0.1:17601,2=127.0.0.1:17602,3=127.0.0.1:17603

run() {
  local mode="$1" D="/tmp/ballast-bench-tls-$1" extra=() ctl=() pids=()
  rm -rf "$D" && mkdir -p "$D"
  if [[ $mode == tls ]]; then
    "$B/ballastctl" certs init --dir "$D/ca" >/dev/null
    for i in 1 2 3; do "$B/ballastctl" certs issue "n$i" --ca-dir "$D/ca" --san 127.0.0.1 >/dev/null; done
    "$B/ballastctl" certs issue ops --client --ca-dir "$D/ca" >/dev/null
    ctl=(--cacert "$D/ca/ca.pem" --cert "$D/ca/ops.pem" --key "$D/ca/ops-key.pem")
  fi
  for i in 1 2 3; do
    [[ $mode == tls ]] && extra=(--tls-ca "$D/ca/ca.pem" --tls-cert "$D/ca/n$i.pem" --tls-key "$D/ca/n$i-key.pem")
    "$B/ballastd" --node-id "$i" --data-dir "$D/n$i" --listen "127.0.0.1:1760$i" \
      --http-listen "127.0.0.1:1770$i" --initial-cluster "$IC" "${extra[@]}" >"$D/n$i.log" 2>&1 &
    pids+=($!)
  done
  trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
  local deadline=$((SECONDS + 30))
  until "$B/ballastctl" --endpoints "$EP" "${ctl[@]}" kv put bench/warm x --timeout 2 >/dev/null 2>&1; do
    [[ $SECONDS -lt $deadline ]] || { echo "no leader within 30 s; logs in $D" >&2; exit 1; }
    sleep 0.3
  done
  echo "== $mode"
  "$B/ballastctl" --endpoints "$EP" "${ctl[@]}" bench --seconds 10
  kill "${pids[@]}"
  wait "${pids[@]}" 2>/dev/null || true
  trap - EXIT
}

case "${1:-both}" in
  plain|tls) run "$1" ;;
  both) run plain; run tls ;;
  *) echo "usage: $0 [plain|tls|both]" >&2; exit 2 ;;
esac
