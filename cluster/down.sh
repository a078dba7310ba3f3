#!/bin/bash
# Stop what up.sh started, by pid (pid files), never by process name.
#   --purge  also wipe Slurm state, spool, logs and the accounting database (job ids restart at 1)
set -uo pipefail
here=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
. "$here/lib.sh"
purge=0
for a in "$@"; do case "$a" in --purge) purge=1;; *) die "usage: $0 [--purge]";; esac; done
[ "$(id -u)" = 0 ] || die "stopping the local cluster needs root; run 'sudo make cluster-down'"
# whichever release is running (up.sh wrote it), whatever SLURM says now
use_release "$(running_release)"

# 1. cancel jobs while the controller is up, so no job step outlives its slurmd
if alive "$(pid_of_file "$RUN/slurmctld.pid")" slurmctld; then
  jobs=$(squeue -h -o %i 2>/dev/null | tr '\n' ' ')
  if [ -n "${jobs// /}" ]; then
    log "cancelling jobs: $jobs"
    scancel $jobs 2>/dev/null
    for _ in $(seq 100); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.2; done
  fi
fi
# 2. the node daemons, then any slurmstepd they left (children of our slurmd's)
for pidf in "$RUN"/slurmd-n*.pid; do
  [ -e "$pidf" ] || continue
  stop_pid "$(pid_of_file "$pidf")" slurmd 15; rm -f "$pidf"
done
for p in /proc/[0-9]*; do
  [ "$(cat "$p/comm" 2>/dev/null)" = slurmstepd ] && stop_pid "${p#/proc/}" slurmstepd 5
done
# 3. controller, accounting, database, munge
stop_pid "$(pid_of_file "$RUN/slurmctld.pid")" slurmctld 20; rm -f "$RUN/slurmctld.pid"
stop_pid "$(pid_of_file "$RUN/slurmdbd.pid")" slurmdbd 20; rm -f "$RUN/slurmdbd.pid"
if [ -s "$RUN/mysqld/mysqld.pid" ]; then
  [ "$purge" = 1 ] && "${in_root[@]}" mariadb -e 'DROP DATABASE IF EXISTS slurm_acct_db' 2>/dev/null
  stop_pid "$(pid_of_file "$RUN/mysqld/mysqld.pid")" mariadbd 60
fi
stop_pid "$(pid_of_file "$RUN/munge/munged.pid")" munged 10
# 4. network and name resolution
for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$NS_PREFIX[0-9]+\$"); do
  ip link del "$VETH_PREFIX${ns#"$NS_PREFIX"}" 2>/dev/null
  ip netns del "$ns"
done
ip link show "$BRIDGE" >/dev/null 2>&1 && ip link del "$BRIDGE"
hosts_set_block ""
if [ "$purge" = 1 ]; then
  rm -rf "$ROOT"/var/spool/slurmctld/* "$ROOT"/var/spool/slurmd/* "$LOGS"/*
  log "purged Slurm $SLURM state, spool and logs"
fi
rm -f "$STATE_DIR/release"
log "stopped Slurm $SLURM"
