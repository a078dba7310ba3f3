#!/bin/bash
# What a failing cluster test needs to see: node and queue state, accounting, daemon log tails.
set +e
here=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
. "$here/lib.sh"
use_release "$(running_release)"   # its clients on PATH, its log folder in LOGS
echo "== Slurm $SLURM: $(sinfo -V 2>&1)"
echo "== sinfo"; sinfo -N -o '%N %P %T %c %G %E' 2>&1
echo "== squeue"; squeue -o '%i %j %P %T %r %N' 2>&1
echo "== sacct (last 20)"; sacct -X -a --parsable2 --format=JobID,JobName,Partition,State,ExitCode,NodeList,Start,End 2>&1 | tail -20
for f in "$LOGS/slurmctld.log" "$LOGS"/slurmd-n*.log "$LOGS/slurmdbd.log"; do
  [ -e "$f" ] && { echo "== tail $f"; tail -n 15 "$f"; }
done
exit 0
