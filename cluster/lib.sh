# Shared by up.sh and down.sh: names of what the launcher owns, and pid-based process helpers.
STATE_DIR=${CLUSTER_STATE_DIR:-/var/lib/slurm-gpu-cluster}
BRIDGE=sgbr0
NS_PREFIX=sgns
VETH_PREFIX=sgv
HOSTS_BEGIN="# BEGIN slurm-gpu local cluster"
HOSTS_END="# END slurm-gpu local cluster"

log() { echo "[cluster $(date +%T)] $*"; }
die() { echo "[cluster] ERROR: $*" >&2; exit 1; }

# alive PID NAME: the process exists, is not a zombie (PID 1 here reaps slowly), and is NAME
alive() {
  local pid=$1 name=$2 st
  [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
  st=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
  [ "$st" != Z ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ]
}
pid_of_file() { [ -s "$1" ] && tr -dc '0-9' < "$1" || true; }

# stop_pid PID NAME SECONDS: SIGTERM, wait, then SIGKILL; only ever a pid we were given
stop_pid() {
  local pid=$1 name=$2 secs=${3:-15} i
  alive "$pid" "$name" || return 0
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq $((secs*10))); do alive "$pid" "$name" || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true; sleep 0.2
}

wait_for() { # wait_for SECONDS WHAT CMD...
  local secs=$1 what=$2; shift 2
  local end=$(( $(date +%s) + secs ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || die "timed out after ${secs}s waiting for $what"
    sleep 0.2
  done
}

# render FILE: replace @NAME@ with the value of environment variable NAME
render() {
  python3 - "$1" <<'PY'
import os, re, sys
text = open(sys.argv[1]).read()
print(re.sub(r"@([A-Z_]+)@", lambda m: os.environ.get(m.group(1), ""), text), end="")
PY
}

# /etc/hosts may be a bind mount: rewrite it in place, never replace the file
hosts_set_block() {
  local tmp; tmp=$(mktemp)
  sed "/^$HOSTS_BEGIN\$/,/^$HOSTS_END\$/d" /etc/hosts > "$tmp"
  if [ -n "$1" ]; then printf '%s\n%s\n%s\n' "$HOSTS_BEGIN" "$1" "$HOSTS_END" >> "$tmp"; fi
  cmp -s "$tmp" /etc/hosts || cat "$tmp" > /etc/hosts
  rm -f "$tmp"
}
