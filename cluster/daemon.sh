#!/bin/bash
# One daemon of the running local cluster, whichever Slurm release it runs (tests that take a daemon
# away and bring it back use this, never a bare daemon name or a host path):
#   daemon.sh pid NAME     its pid (NAME: slurmctld, slurmdbd or slurmd-nI)
#   daemon.sh start NAME   start it again as cluster/up.sh does, and wait until it answers
#   daemon.sh root         the release's root filesystem ("/" for the host's own 22.05)
set -euo pipefail
here=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
. "$here/lib.sh"
use_release "$(running_release)"
what=${1:-}; name=${2:-}
case "$what" in
  root) echo "${ROOT:-/}";;
  pid)
    pid=$(pid_of_file "$RUN/$name.pid"); [ -n "$pid" ] || die "no pid file for '$name' in $RUN"; echo "$pid";;
  start)
    case "$name" in
      slurmctld) start_slurmctld; wait_for 60 slurmctld sh -c 'scontrol ping | grep -q UP';;
      slurmdbd) start_slurmdbd; wait_for 60 slurmdbd sacctmgr -n list cluster;;
      slurmd-n[0-9]*) start_slurmd "${name#slurmd-n}";;
      *) die "daemon.sh start: unknown daemon '$name'";;
    esac;;
  *) die "usage: daemon.sh pid NAME | start NAME | root";;
esac
