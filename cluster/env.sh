# . cluster/env.sh: put the running Slurm release's clients first on PATH, so that `sinfo -V` names
# it (cluster/up.sh SLURM=24.11|26.05 writes them). With the host's own 22.05 it changes nothing.
_sg_state=${CLUSTER_STATE_DIR:-/var/lib/slurm-gpu-cluster}
_sg_release=$(cat "$_sg_state/release" 2>/dev/null || echo 22.05)
if [ "$_sg_release" != 22.05 ] && [ -d "$_sg_state/releases/$_sg_release/bin" ]; then
  case ":$PATH:" in
    *":$_sg_state/releases/$_sg_release/bin:"*) ;;
    *) PATH="$_sg_state/releases/$_sg_release/bin:$PATH"; export PATH;;
  esac
fi
unset _sg_state _sg_release
