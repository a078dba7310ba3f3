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

# The Slurm release a launcher call is for: 22.05 runs the host's own packages; the others run from a
# root filesystem of their own (cluster/rootfs.sh), where daemons, clients and jobs all live.  The
# release running now is in $STATE_DIR/release (up.sh writes it).
release_root() { echo "$STATE_DIR/releases/$1/root"; }
running_release() { [ -s "$STATE_DIR/release" ] && cat "$STATE_DIR/release" || echo 22.05; }

# use_release R: set ROOT (the release's root filesystem, empty for the host's own 22.05), RUN (its pid
# files), LOGS, RELEASE_BIN (client wrappers, empty for 22.05; on PATH first from here on) and
# in_root (how to run a command, daemons included, in that release: nothing for 22.05; else a private
# mount namespace holding the host paths a job needs, chrooted; see write_release_tools)
use_release() {
  SLURM=$1
  # no other release's wrappers on PATH: a newer client must never talk to this release's daemons
  local dir kept=""
  local IFS=:
  for dir in $PATH; do
    case "$dir" in "$STATE_DIR"/releases/*/bin) ;; *) kept="${kept:+$kept:}$dir";; esac
  done
  export PATH="$kept"
  if [ "$SLURM" = 22.05 ]; then
    ROOT=""; RELEASE_BIN=""; in_root=()
  else
    ROOT=$(release_root "$SLURM"); RELEASE_BIN=$STATE_DIR/releases/$SLURM/bin
    in_root=(unshare --mount --propagation private "$STATE_DIR/releases/$SLURM/enter" /)
    export PATH="$RELEASE_BIN:$PATH"
  fi
  RUN=$ROOT/run; LOGS=$ROOT/var/log/slurm
}

# write_release_tools BIND...: for a release in a root filesystem, the `enter` script (mount /proc,
# /dev, /sys and the given host paths at the same places inside the root, chroot, cd, exec) and one
# client wrapper per Slurm command, so that `sinfo -V` on PATH names the release.  Inside a job the
# root's own binaries run: the wrapper folder does not exist there.
write_release_tools() {
  local dir=$STATE_DIR/releases/$SLURM name binds="" b
  mkdir -p "$dir/bin"
  for b in "$@"; do binds="$binds $(printf '%q' "$b")"; done
  cat > "$dir/enter.new" <<ENTER
#!/bin/bash
# Written by cluster/up.sh. enter DIR CMD...: run CMD in the Slurm $SLURM root filesystem, in DIR.
# Call it in a private mount namespace (unshare --mount): what it mounts goes with the process.
set -e
root=$(printf '%q' "$ROOT")
dir=\$1; shift
mount -t proc proc "\$root/proc"
mount --rbind /dev "\$root/dev"
mount --rbind /sys "\$root/sys"
for b in$binds; do
  [ -d "\$b" ] || continue
  mkdir -p "\$root\$b"; mount --rbind "\$b" "\$root\$b"
done
[ -d "\$root\$dir" ] || dir=/
exec chroot "\$root" /bin/sh -c 'cd "\$0" && exec "\$@"' "\$dir" "\$@"
ENTER
  chmod +x "$dir/enter.new"; mv "$dir/enter.new" "$dir/enter"
  for name in sbatch squeue sacct scontrol scancel sinfo srun salloc sacctmgr sdiag sstat sprio sshare; do
    printf '#!/bin/sh\nexec unshare --mount --propagation private %q "$PWD" /usr/bin/%s "$@"\n' \
      "$dir/enter" "$name" > "$dir/bin/$name"
    chmod +x "$dir/bin/$name"
  done
}

# Starting the Slurm daemons of the release use_release chose, for up.sh and for daemon.sh (tests that
# stop and restart one).  Each daemonizes; pid files are under $RUN.
start_slurmctld() { "${in_root[@]}" /usr/sbin/slurmctld; }
start_slurmdbd() { "${in_root[@]}" /usr/sbin/slurmdbd; }
start_slurmd() { # start_slurmd I: node nI, inside its network namespace
  # nsenter, not `ip netns exec`: the latter remounts /sys and slurmd 22.05 then finds no cgroup fs;
  # unshare --uts gives the node its own hostname, so gloo advertises the node's own address
  if [ -z "$ROOT" ]; then
    nsenter --net="/run/netns/$NS_PREFIX$1" unshare --uts sh -c "hostname n$1 && exec slurmd -N n$1"
  else
    nsenter --net="/run/netns/$NS_PREFIX$1" unshare --uts --mount --propagation private \
      sh -c "hostname n$1 && exec $(printf '%q' "$STATE_DIR/releases/$SLURM/enter") / /usr/sbin/slurmd -N n$1"
  fi
}
