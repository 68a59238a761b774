#!/usr/bin/env bash
# Put a Ballast cluster on three (or more) servers over SSH, or bring one back in line.
# Run `deploy/bootstrap.sh --help` for the options. Safe to re-run: it changes only what
# differs, and says when nothing does.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
  cat <<'EOF'
Usage: deploy/bootstrap.sh --hosts A,B,C --vip ADDR/PREFIX --interface IF [options]

Installs ballastd and ballastctl on every host over SSH, writes each member's configuration,
makes a cluster CA, member certificates (naming their member: ballast://member/ID), a client
certificate and a token file with a member and an admin token (or uses those already in
--certs), installs and starts the systemd unit, forms the cluster, waits for
a leader, defines a service and its VIP, waits until the VIP is held, and prints
`ballastctl status`. Every host is checked (SSH, architecture, systemd, interface) before
anything is changed anywhere. Re-running it on a working cluster changes nothing and says so;
a changed binary or configuration restarts members one at a time, changed certificates are
reloaded (SIGHUP) without a restart.

Required:
  --hosts A,B,C          SSH hosts, in node-id order (1, 2, 3...). Each is also the address
                         the members and clients dial (gRPC port --grpc-port), so it goes in
                         that member's certificate. At least three.
  --vip ADDR/PREFIX      the virtual IP, e.g. 203.0.113.10/24
  --interface IF         the interface the VIP goes on, on every host

Options:
  --ssh-user USER        SSH user (default root; another user needs passwordless sudo)
  --identity KEY         SSH private key
  --ssh-port PORT        SSH port (default 22)
  --ssh-option OPT       extra `ssh -o` option, repeatable (e.g. StrictHostKeyChecking=yes)
  --dry-run              check the hosts and print every action, change nothing
  --certs DIR            local directory of the CA, certificates and token (default
                         ./ballast-certs). Put your own ca.pem + ca-key.pem, or n<ID>.pem +
                         n<ID>-key.pem per node, there to have them used; missing ones are made.
  --bin-dir DIR          where ballastd and ballastctl are (default: the repository's
                         target/release, built with cargo when missing)
  --service NAME         the service the VIP follows (default ballast)
  --check SPEC           its health check (default tcp:<grpc port>: the VIP stays on a
                         live member)
  --grpc-port PORT       gRPC port of the members (default 7400)
  --http-port PORT       metrics/health port, on 127.0.0.1 (default 7480)
  --timeout SECONDS      how long to wait for a leader and for the VIP (default 60)
  --no-systemd           run ballastd as a plain background process (pid file, log file)
                         instead of a systemd unit: for containers and labs without systemd
  --prefix DIR           install everything under DIR on the hosts ({host} is replaced by
                         the host), for hosts that share a filesystem (labs). --no-systemd only.
  -h, --help             this text

On the hosts: /usr/local/bin/ballastd and ballastctl, /etc/ballast/ballastd.toml,
/etc/ballast/tls/{ca,node,node-key}.pem, /etc/ballast/tokens, data in /var/lib/ballast,
/etc/systemd/system/ballastd.service (from deploy/systemd/). The CA key never leaves --certs.
EOF
}

die() { echo "bootstrap: $*" >&2; exit 1; }

HOSTS="" VIP="" IFACE="" SSH_USER=root IDENTITY="" SSH_PORT=22 DRY=0 SYSTEMD=1 PREFIX=""
CERTS="./ballast-certs" BIN_DIR="" SERVICE=ballast CHECK="" GRPC_PORT=7400 HTTP_PORT=7480
TIMEOUT=60
SSH_OPTS=()
while [[ $# -gt 0 ]]; do
  need_value() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value (see --help)"; }
  case "$1" in
    --hosts) need_value "$@"; HOSTS="$2"; shift 2 ;;
    --vip) need_value "$@"; VIP="$2"; shift 2 ;;
    --interface) need_value "$@"; IFACE="$2"; shift 2 ;;
    --ssh-user) need_value "$@"; SSH_USER="$2"; shift 2 ;;
    --identity) need_value "$@"; IDENTITY="$2"; shift 2 ;;
    --ssh-port) need_value "$@"; SSH_PORT="$2"; shift 2 ;;
    --ssh-option) need_value "$@"; SSH_OPTS+=(-o "$2"); shift 2 ;;
    --dry-run) DRY=1; shift ;;
    --certs) need_value "$@"; CERTS="$2"; shift 2 ;;
    --bin-dir) need_value "$@"; BIN_DIR="$2"; shift 2 ;;
    --service) need_value "$@"; SERVICE="$2"; shift 2 ;;
    --check) need_value "$@"; CHECK="$2"; shift 2 ;;
    --grpc-port) need_value "$@"; GRPC_PORT="$2"; shift 2 ;;
    --http-port) need_value "$@"; HTTP_PORT="$2"; shift 2 ;;
    --timeout) need_value "$@"; TIMEOUT="$2"; shift 2 ;;
    --no-systemd) SYSTEMD=0; shift ;;
    --prefix) need_value "$@"; PREFIX="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

# ---- 0. Arguments, checked before any host is contacted.
[[ -n "$HOSTS" ]] || die "--hosts is required (see --help)"
[[ -n "$VIP" ]] || die "--vip is required (see --help)"
[[ -n "$IFACE" ]] || die "--interface is required (see --help)"
IFS=, read -r -a H <<<"$HOSTS"
[[ ${#H[@]} -ge 3 ]] || die "--hosts needs at least three hosts for a quorum that survives one loss (got ${#H[@]})"
declare -A seen=()
for h in "${H[@]}"; do
  [[ "$h" =~ ^[A-Za-z0-9._-]+$ ]] || die "host '$h' is not a host name or IPv4 address"
  [[ -z "${seen[$h]:-}" ]] || die "host $h is listed twice"
  seen[$h]=1
done
[[ "$VIP" =~ ^([0-9]{1,3}\.){3}[0-9]{1,3}/[0-9]{1,2}$ ]] || die "--vip '$VIP' is not ADDR/PREFIX (e.g. 203.0.113.10/24)"
[[ "$IFACE" =~ ^[A-Za-z0-9._-]{1,15}$ ]] || die "--interface '$IFACE' is not an interface name"
[[ "$SERVICE" =~ ^[a-z0-9][a-z0-9-]*$ ]] || die "--service '$SERVICE': lowercase letters, digits and '-'"
for n in SSH_PORT GRPC_PORT HTTP_PORT TIMEOUT; do
  [[ "${!n}" =~ ^[0-9]+$ ]] || die "--$(echo "$n" | tr 'A-Z_' 'a-z-') must be a number"
done
[[ -n "$CHECK" ]] || CHECK="tcp:$GRPC_PORT"
if [[ -n "$PREFIX" ]]; then
  [[ $SYSTEMD -eq 0 ]] || die "--prefix works with --no-systemd only (the unit reads /etc/ballast)"
  [[ "$PREFIX" =~ ^/[A-Za-z0-9._/{}-]+$ ]] || die "--prefix must be an absolute path of plain characters"
fi
command -v ssh >/dev/null && command -v scp >/dev/null || die "ssh and scp are needed on this machine"
[[ -z "$IDENTITY" || -r "$IDENTITY" ]] || die "--identity $IDENTITY is not readable"

if [[ -z "$BIN_DIR" ]]; then
  BIN_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/release"
  if [[ ! -x "$BIN_DIR/ballastd" || ! -x "$BIN_DIR/ballastctl" ]]; then
    echo "building ballastd and ballastctl (release)..."
    (cd "$ROOT" && cargo build --release -p ballast-node -p ballast-client --bins)
  fi
fi
for b in ballastd ballastctl; do
  [[ -x "$BIN_DIR/$b" ]] || die "$BIN_DIR/$b is missing (see --bin-dir)"
done
# The binaries' architecture, from the ELF header (e_machine), as `uname -m` names it.
machine="$(od -An -tu2 -j18 -N2 "$BIN_DIR/ballastd" | tr -d ' ')"
case "$machine" in
  62) ARCH=x86_64 ;; 183) ARCH=aarch64 ;; 40) ARCH=armv7l ;; 243) ARCH=riscv64 ;;
  *) die "$BIN_DIR/ballastd is not an ELF binary for a known architecture (e_machine $machine)" ;;
esac

CTRL="$(mktemp -d /tmp/ballast-bootstrap.XXXXXX)"
ssh_opts() {
  SO=(-p "$SSH_PORT" -o BatchMode=yes -o ConnectTimeout=5 -o ServerAliveInterval=5
    -o ControlMaster=auto -o "ControlPath=$CTRL/%C" -o ControlPersist=120 "${SSH_OPTS[@]}")
  [[ -n "$IDENTITY" ]] && SO+=(-i "$IDENTITY")
  return 0
}
cleanup() {
  ssh_opts
  for h in "${H[@]}"; do ssh "${SO[@]}" -O exit "$SSH_USER@$h" >/dev/null 2>&1 || true; done
  rm -rf "$CTRL"
}
trap cleanup EXIT

# Runs a command on host $1 as the SSH user (one shared connection per host).
ssh_base() {
  local h="$1"; shift
  ssh_opts
  ssh "${SO[@]}" "$SSH_USER@$h" "$@"
}
# Runs a shell command on host $1 (as root: through sudo for another user).
on() {
  local h="$1"; shift
  if [[ "$SSH_USER" == root ]]; then
    ssh_base "$h" "$*"
  else
    ssh_base "$h" "sudo -n sh -c $(printf '%q' "$*")"
  fi
}
copy_to() { # host, remote dir, local files...
  local h="$1" dir="$2"; shift 2
  local o=(-q -P "$SSH_PORT" -o BatchMode=yes -o ConnectTimeout=5 -o "ControlPath=$CTRL/%C" "${SSH_OPTS[@]}")
  [[ -n "$IDENTITY" ]] && o+=(-i "$IDENTITY")
  scp "${o[@]}" "$@" "$SSH_USER@$h:$dir/"
}

prefix_of() { echo "${PREFIX//\{host\}/$1}"; }
say() { echo "$*"; }
# A change: printed always, done unless --dry-run.
act() {
  local what="$1"; shift
  if [[ $DRY -eq 1 ]]; then say "would: $what"; else say "$what"; "$@"; fi
}

# ---- 1. Every host checked before anything changes anywhere.
say "checking ${#H[@]} hosts (SSH, architecture $ARCH, $([[ $SYSTEMD -eq 1 ]] && echo systemd || echo 'no systemd'), interface $IFACE)..."
problems=()
for h in "${H[@]}"; do
  if ! out="$(ssh_base "$h" 'uname -m' 2>&1)"; then
    problems+=("$h: unreachable over SSH as $SSH_USER: $(echo "$out" | tail -1)")
    continue
  fi
  arch="$(echo "$out" | tail -1)"
  [[ "$arch" == "$ARCH" ]] || problems+=("$h: wrong architecture: the host is $arch, the binaries are $ARCH")
  if [[ "$SSH_USER" != root ]] && ! ssh_base "$h" 'sudo -n true' >/dev/null 2>&1; then
    problems+=("$h: $SSH_USER cannot use sudo without a password")
    continue
  fi
  if [[ $SYSTEMD -eq 1 ]] && ! on "$h" 'test -d /run/systemd/system && command -v systemctl' >/dev/null 2>&1; then
    problems+=("$h: systemd is not running there (use --no-systemd to run ballastd without it)")
  fi
  on "$h" "test -e /sys/class/net/$IFACE" >/dev/null 2>&1 || problems+=("$h: has no interface $IFACE")
  on "$h" 'command -v nft >/dev/null' >/dev/null 2>&1 || problems+=("$h: nft (nftables) is missing; the VIP fence needs it")
done
if [[ ${#problems[@]} -gt 0 ]]; then
  printf 'bootstrap: %s\n' "${problems[@]}" >&2
  die "nothing was changed"
fi

# ---- 2. Local material: CA, member certificates, a client certificate, the token file.
CTL_LOCAL="$BIN_DIR/ballastctl"
if [[ ! -d "$CERTS" ]]; then act "create $CERTS" mkdir -p "$CERTS"; fi
if [[ ! -f "$CERTS/ca.pem" ]]; then
  act "make a cluster CA in $CERTS" "$CTL_LOCAL" certs init --dir "$CERTS" --name "Ballast CA"
fi
for i in "${!H[@]}"; do
  id=$((i + 1)) h="${H[$i]}"
  if [[ ! -f "$CERTS/n$id.pem" ]]; then
    act "issue the certificate of member $id ($h)" "$CTL_LOCAL" certs issue "n$id" --ca-dir "$CERTS" --san "$h" --member "$id"
  fi
done
if [[ ! -f "$CERTS/ops.pem" ]]; then
  act "issue a client certificate for operators ($CERTS/ops.pem)" "$CTL_LOCAL" certs issue ops --client --ca-dir "$CERTS"
fi
random_token() { od -An -tx1 -N24 /dev/urandom | tr -d ' \n'; }
make_tokens() { # members call each other (and their agents the cluster) with the member token
  (umask 077; printf 'member %s\nadmin %s\n' "$(random_token)" "$(random_token)" >"$CERTS/tokens")
}
[[ -f "$CERTS/tokens" ]] || act "make a member and an admin API token ($CERTS/tokens)" make_tokens
if [[ -f "$CERTS/tokens" ]] && ! grep -q '^member ' "$CERTS/tokens"; then
  say "note: $CERTS/tokens has no member line, so admin tokens also speak Raft (see README: token file)"
fi

ENDPOINTS="$(for h in "${H[@]}"; do printf '%s:%s,' "$h" "$GRPC_PORT"; done)"
ENDPOINTS="${ENDPOINTS%,}"
INITIAL="$(for i in "${!H[@]}"; do printf '%s=%s:%s,' "$((i + 1))" "${H[$i]}" "$GRPC_PORT"; done)"
INITIAL="${INITIAL%,}"

config_of() { # id host prefix
  cat <<EOF
# Written by deploy/bootstrap.sh; re-running it rewrites this file.
node_id = $1
data_dir = "$3/var/lib/ballast"
listen = "0.0.0.0:$GRPC_PORT"
advertise = "$2:$GRPC_PORT"
http_listen = "127.0.0.1:$HTTP_PORT"
initial_cluster = "$INITIAL"
agent = true
token_file = "$3/etc/ballast/tokens"
tls_ca = "$3/etc/ballast/tls/ca.pem"
tls_cert = "$3/etc/ballast/tls/node.pem"
tls_key = "$3/etc/ballast/tls/node-key.pem"
EOF
}

sha() { sha256sum "$1" | cut -d' ' -f1; }

# ---- 3. Per host: upload what differs, then start, restart or reload.
STAGE="$CTRL/stage"
mkdir -p "$STAGE"
changed_hosts=0
declare -A need_restart=() need_reload=() need_start=()
for i in "${!H[@]}"; do
  id=$((i + 1)) h="${H[$i]}" p="$(prefix_of "$h")"
  group=root
  [[ $SYSTEMD -eq 1 ]] && group=ballast
  stage="$STAGE/$id"
  mkdir -p "$stage"
  config_of "$id" "$h" "$p" >"$stage/ballastd.toml"
  # local file | remote path | mode | what a change needs
  files=(
    "$BIN_DIR/ballastd|$p/usr/local/bin/ballastd|0755|restart"
    "$BIN_DIR/ballastctl|$p/usr/local/bin/ballastctl|0755|none"
    "$stage/ballastd.toml|$p/etc/ballast/ballastd.toml|0640|restart"
    "$CERTS/ca.pem|$p/etc/ballast/tls/ca.pem|0644|reload"
    "$CERTS/n$id.pem|$p/etc/ballast/tls/node.pem|0644|reload"
    "$CERTS/n$id-key.pem|$p/etc/ballast/tls/node-key.pem|0640|reload"
    "$CERTS/tokens|$p/etc/ballast/tokens|0640|restart"
  )
  [[ $SYSTEMD -eq 1 ]] && files+=("$ROOT/deploy/systemd/ballastd.service|/etc/systemd/system/ballastd.service|0644|unit")
  remote_paths=()
  for f in "${files[@]}"; do IFS='|' read -r _ r _ _ <<<"$f"; remote_paths+=("$r"); done
  remote_sums="$(on "$h" "sha256sum ${remote_paths[*]} 2>/dev/null || true")"
  to_copy=() installs=() kinds=""
  for f in "${files[@]}"; do
    IFS='|' read -r l r mode kind <<<"$f"
    if [[ -f "$l" ]] && grep -qxF "$(sha "$l")  $r" <<<"$remote_sums"; then continue; fi
    say "$h: $r differs or is missing"
    to_copy+=("$l")
    installs+=("install -D -m $mode -o root -g $group \"\$T/$(basename "$l")\" $r")
    kinds+=" $kind"
  done
  if [[ $SYSTEMD -eq 1 ]] && ! on "$h" 'id ballast' >/dev/null 2>&1; then
    act "$h: create the system user ballast" on "$h" 'useradd --system --home-dir /var/lib/ballast --shell /usr/sbin/nologin ballast'
    kinds+=" restart"
  fi
  running=0
  if [[ $SYSTEMD -eq 1 ]]; then
    on "$h" 'systemctl is-active --quiet ballastd' && running=1
  else
    on "$h" "test -f $p/run/ballastd.pid && kill -0 \$(cat $p/run/ballastd.pid) 2>/dev/null" && running=1
  fi
  if [[ ${#to_copy[@]} -gt 0 ]]; then
    changed_hosts=$((changed_hosts + 1))
    install_files() {
      local t
      t="$(ssh_base "$h" 'mktemp -d')"
      copy_to "$h" "$t" "${to_copy[@]}"
      on "$h" "T=$t; $(IFS=';'; echo "${installs[*]}"); rm -rf $t; mkdir -p $p/var/lib/ballast $p/run $p/var/log"
    }
    act "$h: install ${#to_copy[@]} file(s)" install_files
  fi
  if [[ $running -eq 0 ]]; then
    need_start[$h]=1
  elif [[ "$kinds" == *restart* || "$kinds" == *unit* ]]; then
    need_restart[$h]=1
  elif [[ "$kinds" == *reload* ]]; then
    need_reload[$h]=1
  fi
  [[ $SYSTEMD -eq 1 && "$kinds" == *unit* ]] && act "$h: systemctl daemon-reload" on "$h" 'systemctl daemon-reload'
done

start_member() { # host prefix
  if [[ $SYSTEMD -eq 1 ]]; then
    on "$1" 'systemctl enable --quiet ballastd && systemctl start ballastd'
  else
    on "$1" "cd /; setsid $2/usr/local/bin/ballastd --config $2/etc/ballast/ballastd.toml >>$2/var/log/ballastd.log 2>&1 </dev/null & echo \$! >$2/run/ballastd.pid"
  fi
}
stop_member() { # host prefix: SIGTERM (the agent gives up its VIPs), up to 15 s
  on "$1" "pid=\$(cat $2/run/ballastd.pid); kill \$pid; for i in \$(seq 150); do kill -0 \$pid 2>/dev/null || exit 0; sleep 0.1; done; kill -9 \$pid"
}
remote_ctl() { # ballastctl on the first host, with its node certificate and the admin token
  local p
  p="$(prefix_of "${H[0]}")"
  on "${H[0]}" "BALLAST_TOKEN=\$(sed -n 's/^admin //p' $p/etc/ballast/tokens | head -1) $p/usr/local/bin/ballastctl --endpoints $ENDPOINTS --cacert $p/etc/ballast/tls/ca.pem --cert $p/etc/ballast/tls/node.pem --key $p/etc/ballast/tls/node-key.pem $*"
}
# Waits until the cluster has a leader and every member is reachable from it, so that the
# next restart never takes a second member away.
wait_healthy() {
  local deadline=$((SECONDS + TIMEOUT)) st
  while true; do
    st="$(remote_ctl status -o json --timeout 2 2>/dev/null || true)"
    if grep -Eq '"leader_id": [1-9]' <<<"$st" &&
      [[ "$(grep -c '"reachable": true' <<<"$st")" -ge ${#H[@]} ]]; then
      return 0
    fi
    [[ $SECONDS -lt $deadline ]] || die "the cluster did not have a leader with every member reachable within ${TIMEOUT}s; see the log on the hosts ($(prefix_of "${H[0]}")/var/log/ballastd.log or journalctl -u ballastd)"
    sleep 0.5
  done
}

# Members that are not running start together (a new cluster needs a quorum to form);
# running ones that changed restart one at a time, each after the cluster has a leader.
for h in "${H[@]}"; do
  [[ -n "${need_start[$h]:-}" ]] && act "$h: start ballastd" start_member "$h" "$(prefix_of "$h")"
done
# A planned restart: the member is drained first (its VIPs move with a break-before-make
# handover of tens of milliseconds instead of a lease expiry), restarted, and resumed once
# the cluster has it back.
restart_member() { # id host
  local id="$1" h="$2" p
  p="$(prefix_of "$h")"
  remote_ctl node drain "$id" --wait --timeout "$TIMEOUT" >/dev/null ||
    say "$h: could not drain node $id first; restarting anyway"
  if [[ $SYSTEMD -eq 1 ]]; then
    on "$h" 'systemctl restart ballastd'
  else
    stop_member "$h" "$p" && start_member "$h" "$p"
  fi
  wait_healthy
  remote_ctl node resume "$id" >/dev/null
}
for i in "${!H[@]}"; do
  h="${H[$i]}"
  [[ -n "${need_restart[$h]:-}" ]] || continue
  [[ $DRY -eq 0 ]] && wait_healthy
  act "$h: drain node $((i + 1)), restart ballastd, resume it" restart_member "$((i + 1))" "$h"
done
for h in "${H[@]}"; do
  [[ -n "${need_reload[$h]:-}" ]] || continue
  if [[ $SYSTEMD -eq 1 ]]; then
    act "$h: reload the certificates (systemctl reload)" on "$h" 'systemctl reload ballastd'
  else
    p="$(prefix_of "$h")"
    act "$h: reload the certificates (SIGHUP)" on "$h" "kill -HUP \$(cat $p/run/ballastd.pid)"
  fi
done

if [[ $DRY -eq 1 ]]; then
  started=$(( ${#need_start[@]} + ${#need_restart[@]} + ${#need_reload[@]} ))
  say "would then: wait for a leader, define service $SERVICE ($CHECK) and VIP $SERVICE-vip ($VIP on $IFACE) unless already defined, wait until it is held"
  say "dry run: nothing was changed ($changed_hosts host(s) with files to install, $started member(s) to start, restart or reload)"
  exit 0
fi

# ---- 4. The cluster: a leader, the service and its VIP, held.
say "waiting for a leader and every member..."
wait_healthy
want="service=$SERVICE check=$CHECK backends=$(seq -s, 1 ${#H[@]}) vip=$VIP interface=$IFACE"
have="$(remote_ctl kv get ballast/bootstrap/definition 2>/dev/null || true)"
defined=0
if [[ "$have" != "$want" ]]; then
  say "defining service $SERVICE ($CHECK on nodes $(seq -s, 1 ${#H[@]})) and VIP $SERVICE-vip ($VIP on $IFACE)"
  remote_ctl service apply "$SERVICE" --check "$CHECK" --backends "$(seq -s, 1 ${#H[@]})" >/dev/null
  remote_ctl vip apply "$SERVICE-vip" --address "$VIP" --interface "$IFACE" --service "$SERVICE" >/dev/null
  remote_ctl kv put ballast/bootstrap/definition "'$want'" >/dev/null
  defined=1
fi
say "waiting for the VIP to be held..."
remote_ctl vip wait "$SERVICE-vip" --timeout "$TIMEOUT" || die "the VIP was not held within ${TIMEOUT}s"
remote_ctl status

if [[ $changed_hosts -eq 0 && $defined -eq 0 && ${#need_start[@]} -eq 0 && ${#need_restart[@]} -eq 0 && ${#need_reload[@]} -eq 0 ]]; then
  say "no change: every host already runs this configuration and the cluster is as asked"
else
  say "done: $changed_hosts host(s) updated, ${#need_start[@]} started, ${#need_restart[@]} restarted, ${#need_reload[@]} reloaded"
fi
say "from this machine: ballastctl --endpoints $ENDPOINTS --cacert $CERTS/ca.pem --cert $CERTS/ops.pem --key $CERTS/ops-key.pem --token \"\$(sed -n 's/^admin //p' $CERTS/tokens)\" status"
