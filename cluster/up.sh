#!/bin/bash
# Bring up a real local Slurm cluster on this one machine, for the project's tests and demo:
# munged, MariaDB + slurmdbd (so sacct works), slurmctld and N slurmd "nodes", each node in its own
# network namespace (own address and hostname), fake GPUs declared as GRES.  No systemd needed.
# Idempotent: starts only what is not running; restarts Slurm daemons when the generated config changed.
#
# Knobs (environment): NODES (2), GPUS per node (2), CPUS per node (4), ACCOUNTING=dbd|none (dbd),
#   TASK_PLUGIN=task/none|task/affinity (task/none: the declared CPUs may exceed the real cores; with
#   task/affinity, Slurm binds each task to CPUs, which must then exist: CPUS at most the cores),
#   SUBNET (10.250.0: the /24 of the private bridge), CLUSTER_STATE_DIR (/var/lib/slurm-gpu-cluster),
#   SLURM=22.05|24.11|26.05 (22.05: the host's Debian 12 packages; the others run from a root filesystem
#   built once by cluster/rootfs.sh; `. cluster/env.sh` then puts that release's clients first on PATH;
#   unset: the release running now, else 22.05),
#   BIND_PATHS (colon-separated host paths that jobs of a root-filesystem release must see at the same
#   place, besides /tmp, /home, /root, this repository and its venv's Python).
set -euo pipefail
here=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
. "$here/lib.sh"
t_start=$(date +%s.%N)

NODES=${NODES:-2}; GPUS=${GPUS:-2}; CPUS=${CPUS:-4}; ACCOUNTING=${ACCOUNTING:-dbd}; SUBNET=${SUBNET:-10.250.0}
TASK_PLUGIN=${TASK_PLUGIN:-task/none}
# unset: the release running now (a test that restarts a daemon it killed must not switch releases)
SLURM=${SLURM:-$(running_release)}
case "$SLURM" in 22.05|24.11|26.05) ;; *) die "SLURM must be 22.05, 24.11 or 26.05 (got '$SLURM')";; esac
[ "$(id -u)" = 0 ] || die "the local cluster needs root (it installs Debian packages, writes /etc/slurm and creates network namespaces); run 'sudo make cluster-up'"
[[ "$NODES" =~ ^[0-9]+$ ]] && [ "$NODES" -ge 1 ] && [ "$NODES" -le 200 ] || die "NODES must be 1..200 (got '$NODES')"
[[ "$GPUS" =~ ^[0-9]+$ ]] && [ "$GPUS" -le 16 ] || die "GPUS must be 0..16 (got '$GPUS')"
[[ "$CPUS" =~ ^[0-9]+$ ]] && [ "$CPUS" -ge 1 ] || die "CPUS must be >= 1 (got '$CPUS')"
case "$ACCOUNTING" in dbd|none) ;; *) die "ACCOUNTING must be dbd or none (got '$ACCOUNTING')";; esac
case "$TASK_PLUGIN" in task/none) ;; task/affinity)
  [ "$CPUS" -le "$(nproc)" ] || die "TASK_PLUGIN=task/affinity binds tasks to real CPUs: CPUS must be at most $(nproc) (got '$CPUS')";;
  *) die "TASK_PLUGIN must be task/none or task/affinity (got '$TASK_PLUGIN')";; esac
mkdir -p "$STATE_DIR"
# one release at a time: they share the namespaces, addresses and ports
if [ "$(running_release)" != "$SLURM" ]; then
  log "switching from Slurm $(running_release) to $SLURM"
  bash "$here/down.sh"
fi
# from here on whatever starts is this release's: down.sh reads this to stop it, even after a failed up
echo "$SLURM" > "$STATE_DIR/release"

# ---- 1. packages (Debian's own Slurm 22.05 and munge; MariaDB + slurmdbd for sacct), or the root
# filesystem of another release, which has them all
if [ "$SLURM" = 22.05 ]; then
pkgs="slurmctld slurmd slurm-client munge"
[ "$ACCOUNTING" = dbd ] && pkgs="$pkgs slurmdbd mariadb-server"
missing=""
for p in $pkgs; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing="$missing $p"
done
if [ -n "$missing" ]; then
  log "installing:$missing"
  own_policy=0
  # package scripts must not try to start daemons (there is no init system to own them here)
  if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; own_policy=1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
  [ "$own_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
fi
use_release 22.05
else
  bash "$here/rootfs.sh" "$SLURM" >/dev/null
  use_release "$SLURM"
  repo=$(dirname "$here")
  binds=(/tmp /home /root "$repo")
  if [ -x "$repo/.venv/bin/python" ]; then
    base=$("$repo/.venv/bin/python" -c 'import sys; print(sys.base_prefix)')
    case "$base" in /usr|/usr/*) ;; *) binds+=("$base");; esac  # the root has its own /usr
  fi
  IFS=: read -r -a extra <<< "${BIND_PATHS:-}"
  binds+=("${extra[@]}")
  write_release_tools "${binds[@]}"
fi

# ---- 2. configuration, rendered from cluster/conf/*.in
mkdir -p "$ROOT/etc/slurm" "$ROOT/var/spool/slurmctld" "$LOGS" "$RUN/munge" "$STATE_DIR/etc"
"${in_root[@]}" chown munge:munge /run/munge
for i in $(seq 1 "$NODES"); do mkdir -p "$ROOT/var/spool/slurmd/n$i"; done
if [ "$GPUS" -gt 0 ]; then
  mkdir -p "$ROOT$STATE_DIR/fakegpu"
  for g in $(seq 0 $((GPUS-1))); do
    # slurmd accepts only character/block devices in gres.conf File=; borrow /dev/null's numbers
    dev=$ROOT$STATE_DIR/fakegpu/gpu$g
    [ -c "$dev" ] || { rm -f "$dev"; mknod "$dev" c 1 3; }
  done
fi
ctl_host=$(hostname -s)
ctl_addr=$SUBNET.1
if [ "$ACCOUNTING" = dbd ]; then
  accounting="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$ctl_addr"
  # gres/gpu in TRES is fatal for slurmctld without slurmdbd
  [ "$GPUS" -gt 0 ] && accounting="$accounting
AccountingStorageTRES=gres/gpu"
else
  accounting="AccountingStorageType=accounting_storage/none"
fi
gres_types=""; node_gres=""
[ "$GPUS" -gt 0 ] && { gres_types="GresTypes=gpu"; node_gres=" Gres=gpu:$GPUS"; }
nodes=""
for i in $(seq 1 "$NODES"); do
  nodes="${nodes}NodeName=n$i NodeHostname=n$i NodeAddr=$SUBNET.$((10+i)) CPUs=$CPUS RealMemory=4000$node_gres State=UNKNOWN
"
done
new_conf=$STATE_DIR/etc/slurm.conf.new
CTL_HOST=$ctl_host CTL_ADDR=$ctl_addr GRES_TYPES=$gres_types ACCOUNTING_LINES=$accounting NODE_LINES=$nodes TASK_PLUGIN=$TASK_PLUGIN \
  render "$here/conf/slurm.conf.in" > "$new_conf"
new_gres=$STATE_DIR/etc/gres.conf.new
{ echo "AutoDetect=off"
  [ "$GPUS" -gt 0 ] && echo "NodeName=n[1-$NODES] Name=gpu File=$STATE_DIR/fakegpu/gpu[0-$((GPUS-1))]"
} > "$new_gres"
conf_changed=0
cmp -s "$new_conf" "$ROOT/etc/slurm/slurm.conf" && cmp -s "$new_gres" "$ROOT/etc/slurm/gres.conf" || conf_changed=1
install -m 644 "$new_conf" "$ROOT/etc/slurm/slurm.conf"
install -m 644 "$new_gres" "$ROOT/etc/slurm/gres.conf"
rm -f "$new_conf" "$new_gres"
# the nodes this launcher runs, for down.sh and for tests
echo "$NODES" > "$STATE_DIR/nodes"
if [ "$ACCOUNTING" = dbd ]; then
  render "$here/conf/slurmdbd.conf.in" > "$STATE_DIR/etc/slurmdbd.conf"
  install -m 600 "$STATE_DIR/etc/slurmdbd.conf" "$ROOT/etc/slurm/slurmdbd.conf"   # slurmdbd refuses anything looser
fi

# ---- 2b. a smaller cluster than before: the nodes past NODES go, with their jobs, daemons and network
surplus=()
for pidf in "$RUN"/slurmd-n*.pid; do
  [ -e "$pidf" ] || continue
  i=${pidf#"$RUN"/slurmd-n}; i=${i%.pid}
  [[ "$i" =~ ^[0-9]+$ ]] && [ "$i" -gt "$NODES" ] && surplus+=("$i")
done
for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$NS_PREFIX[0-9]+\$" || true); do
  i=${ns#"$NS_PREFIX"}; [ "$i" -gt "$NODES" ] && [[ " ${surplus[*]} " != *" $i "* ]] && surplus+=("$i")
done
if [ "${#surplus[@]}" -gt 0 ]; then
  log "removing ${#surplus[@]} node(s) past n$NODES"
  if alive "$(pid_of_file "$RUN/slurmctld.pid")" slurmctld; then
    gone=$(printf 'n%s,' "${surplus[@]}"); gone=${gone%,}
    jobs=$(squeue -h -o %i -w "$gone" 2>/dev/null | sort -u | tr '\n' ' ' || true)
    if [ -n "${jobs// /}" ]; then
      log "cancelling jobs on removed nodes: $jobs"
      scancel $jobs 2>/dev/null || true
      for _ in $(seq 100); do [ -z "$(squeue -h -o %i -w "$gone" 2>/dev/null)" ] && break; sleep 0.2; done
    fi
  fi
  for i in "${surplus[@]}"; do
    stop_pid "$(pid_of_file "$RUN/slurmd-n$i.pid")" slurmd 15; rm -f "$RUN/slurmd-n$i.pid"
    ip link del "$VETH_PREFIX$i" 2>/dev/null || true
    [ -e "/run/netns/$NS_PREFIX$i" ] && ip netns del "$NS_PREFIX$i"
  done
fi

# ---- 3. node names must resolve: Lightning and our batch script take MASTER_ADDR from the node list
block=$(for i in $(seq 1 "$NODES"); do echo "$SUBNET.$((10+i)) n$i"; done)
hosts_set_block "$block"
# a root filesystem resolves names from its own /etc/hosts: the host's, node block included
[ -n "$ROOT" ] && cat /etc/hosts > "$ROOT/etc/hosts"

# ---- 4. network: a private bridge and one namespace per node; no route out, no NAT
ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge
# has_addr reads the whole listing first: `ip ... | grep -q` under pipefail fails at random when
# grep exits early and ip dies of SIGPIPE
has_addr() { local listing; listing=$("$@"); [[ "$listing" == *"inet $ADDR/24 "* ]]; }
ADDR=$ctl_addr has_addr ip addr show dev "$BRIDGE" || ip addr add "$ctl_addr/24" dev "$BRIDGE"
ip link set "$BRIDGE" up
for i in $(seq 1 "$NODES"); do
  ns=$NS_PREFIX$i
  [ -e "/run/netns/$ns" ] || ip netns add "$ns"
  ip link show "$VETH_PREFIX$i" >/dev/null 2>&1 || ip link add "$VETH_PREFIX$i" type veth peer name eth0 netns "$ns"
  ip link set "$VETH_PREFIX$i" master "$BRIDGE" up
  ADDR=$SUBNET.$((10+i)) has_addr ip -n "$ns" addr show dev eth0 || ip -n "$ns" addr add "$SUBNET.$((10+i))/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
done

# ---- 5. munge
if [ ! -s "$ROOT/etc/munge/munge.key" ]; then
  mkdir -p "$ROOT/etc/munge"
  dd if=/dev/urandom of="$ROOT/etc/munge/munge.key" bs=1 count=1024 status=none
  "${in_root[@]}" sh -c 'chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key'
fi
if ! alive "$(pid_of_file "$RUN/munge/munged.pid")" munged; then
  log "starting munged"
  "${in_root[@]}" runuser -u munge -- /usr/sbin/munged
fi
wait_for 20 munged "${in_root[@]}" sh -c 'munge -n | unmunge'

# ---- 6. MariaDB + slurmdbd
if [ "$ACCOUNTING" = dbd ]; then
  if ! "${in_root[@]}" mariadb -e 'select 1' >/dev/null 2>&1; then
    log "starting mariadbd"
    # Debian 12 and 13 keep the socket in /run/mysqld, sid's MariaDB 11.8 in /run/mariadbd (and its
    # data in /var/lib/mariadb): make both, and ask the server where its data goes
    mkdir -p "$RUN/mysqld" "$RUN/mariadbd"; "${in_root[@]}" chown mysql:mysql /run/mysqld /run/mariadbd
    datadir=$("${in_root[@]}" mariadbd --verbose --help 2>/dev/null | awk '$1 == "datadir" {print $2}' || true)
    datadir=${datadir:-/var/lib/mysql/}
    [ -d "$ROOT$datadir/mysql" ] || "${in_root[@]}" mariadb-install-db --user=mysql --datadir="$datadir" >/dev/null
    # socket only: nothing listens on the network.  MariaDB 11.8 (sid) needs snapshot isolation off
    # or slurmdbd dies on a write conflict; 10.11 ignores the loose- option
    setsid "${in_root[@]}" /usr/sbin/mariadbd --user=mysql --skip-networking --innodb-buffer-pool-size=64M \
      --loose-innodb-snapshot-isolation=OFF \
      --pid-file=/run/mysqld/mysqld.pid </dev/null >>"$LOGS/mariadbd.out" 2>&1 &
    wait_for 60 mariadbd "${in_root[@]}" mariadb -e 'select 1'
  fi
  "${in_root[@]}" mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmdbpass';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
  if ! alive "$(pid_of_file "$RUN/slurmdbd.pid")" slurmdbd; then log "starting slurmdbd"; start_slurmdbd; fi
  wait_for 60 slurmdbd sacctmgr -n list cluster
  clusters=$(sacctmgr -n -P list cluster format=cluster)
  [[ $'\n'"$clusters"$'\n' == *$'\n'local$'\n'* ]] || sacctmgr -i add cluster local >/dev/null
fi

# ---- 7. slurmctld
pid=$(pid_of_file "$RUN/slurmctld.pid")
if alive "$pid" slurmctld && [ "$conf_changed" = 1 ]; then log "config changed: restarting slurmctld"; stop_pid "$pid" slurmctld 20; fi
if ! alive "$(pid_of_file "$RUN/slurmctld.pid")" slurmctld; then log "starting slurmctld"; start_slurmctld; fi
wait_for 30 slurmctld sh -c 'scontrol ping | grep -q UP'

# ---- 8. one slurmd per node, inside its namespace
for i in $(seq 1 "$NODES"); do
  pidf=$RUN/slurmd-n$i.pid; pid=$(pid_of_file "$pidf")
  if alive "$pid" slurmd && [ "$conf_changed" = 1 ]; then log "config changed: restarting slurmd n$i"; stop_pid "$pid" slurmd 15; fi
  alive "$(pid_of_file "$pidf")" slurmd || start_slurmd "$i"
done

# ---- 9. wait until every node is schedulable
end=$(( $(date +%s) + 60 ))
while :; do
  states=$(sinfo -h -N -o '%N %T' 2>/dev/null | sort -u)
  bad=$(echo "$states" | awk '$2 !~ /^(idle|mixed|allocated|completing)$/ {print $1}' | sort -u)
  [ -n "$states" ] && [ -z "$bad" ] && [ "$(echo "$states" | awk '{print $1}' | sort -u | wc -l)" -ge "$NODES" ] && break
  for n in $(echo "$states" | awk '$2 ~ /drain|down/ {print $1}'); do scontrol update nodename="$n" state=resume >/dev/null 2>&1 || true; done
  [ "$(date +%s)" -lt "$end" ] || { sinfo -N -l; die "nodes not ready: $bad"; }
  sleep 0.3
done
log "cluster ready: Slurm $SLURM, $NODES nodes x $GPUS GPUs, accounting=$ACCOUNTING, in $(awk "BEGIN{printf \"%.1f\", $(date +%s.%N) - $t_start}") s"
