# . cluster/env.sh: put the running Slurm release's clients first on PATH, so that `sinfo -V` names
# it (cluster/up.sh SLURM=24.11|26.05 writes them). With the host's own 22.05 it changes nothing.
_sg_state=${CLUSTER_STATE_DIR:-/var/lib/slurm-gpu-cluster}
_sg_release=$(cat "$_sg_state/release" 2>/dev/null || echo 22.05)
# another release's clients, from an earlier switch in this shell, go first
_sg_path=""
_sg_ifs=$IFS; IFS=:
for _sg_dir in $PATH; do
  case "$_sg_dir" in "$_sg_state"/releases/*/bin) ;; *) _sg_path="${_sg_path:+$_sg_path:}$_sg_dir";; esac
done
IFS=$_sg_ifs
PATH=$_sg_path
if [ "$_sg_release" != 22.05 ] && [ -d "$_sg_state/releases/$_sg_release/bin" ]; then
  PATH="$_sg_state/releases/$_sg_release/bin:$PATH"
fi
export PATH
unset _sg_state _sg_release _sg_path _sg_ifs _sg_dir
