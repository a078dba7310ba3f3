#!/bin/bash
# slurm-gpu: step count/sample=a_b-3ceaeb3fb142 (rule count); submitted on the standard input of sbatch --parsable
#SBATCH --job-name=sg-count
#SBATCH --output=/work/wf/.snakemake/slurm-gpu/logs/count/sample=a_b-3ceaeb3fb142/%j.log
#SBATCH --open-mode=append
#SBATCH --chdir=/work/wf
#SBATCH --export=ALL
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=2
#SBATCH --time=10
#SBATCH --no-requeue
#SBATCH --comment="slurm-gpu step=count/sample=a_b-3ceaeb3fb142"

export PYTHONFAULTHANDLER=1
export SLURM_GPU_STEP=count/sample=a_b-3ceaeb3fb142
# the id the executor follows this job by (contract.job_id): an array task's is <array id>_<task id>
if [ -n "${SLURM_ARRAY_TASK_ID:-}" ]; then SLURM_GPU_JOB_ID="${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"; else SLURM_GPU_JOB_ID="$SLURM_JOB_ID"; fi
export SLURM_GPU_JOB_ID
export SLURM_GPU_NODES=1
export SLURM_GPU_GPUS_PER_NODE=0
export SLURM_GPU_TASKS_PER_NODE=1
export SLURM_GPU_CHECKPOINT_DIR=/work/wf/.snakemake/slurm-gpu/checkpoints/count/sample=a_b-3ceaeb3fb142
export SLURM_GPU_EVENT_LOG=/work/wf/.snakemake/slurm-gpu/events/count/sample=a_b-3ceaeb3fb142.jsonl
(umask 077 && mkdir -p "$SLURM_GPU_CHECKPOINT_DIR")
export SRUN_CPUS_PER_TASK=2

echo "[slurm-gpu] job $SLURM_JOB_ID on $SLURM_JOB_NODELIST, restart ${SLURM_RESTART_COUNT:-0}, $(date -Is)"
# one event per start, also after each requeue (every value here is digits, a safe step name or a
# Slurm node list, so printf makes valid JSON)
printf '{"ts": %s, "event": "started", "step": "%s", "source": "job", "job_id": "%s", "nodes": "%s", "num_nodes": %d, "restart": %d}\n' "$(date +%s.%N | cut -c1-14)" "$SLURM_GPU_STEP" "$SLURM_GPU_JOB_ID" "$SLURM_JOB_NODELIST" "${SLURM_JOB_NUM_NODES:-0}" "${SLURM_RESTART_COUNT:-0}" >> "$SLURM_GPU_EVENT_LOG" || true
# the step runs in the batch step itself, with the SLURM_* environment intact, so the rule's
# own srun gets the whole allocation
# a plain shell rule: its command runs here as Snakemake's shell() runs it (the main Snakemake
# prepared the outputs before submission and checks them when the job has ended)
export OMP_NUM_THREADS=2 GOTO_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 MKL_NUM_THREADS=2 VECLIB_MAXIMUM_THREADS=2 NUMEXPR_NUM_THREADS=2
export TMPDIR=/scratch/tmp TMP=/scratch/tmp TEMPDIR=/scratch/tmp TEMP=/scratch/tmp
# a file another node wrote may show up here late (Snakemake's --latency-wait)
slurm_gpu_inputs_ready() {
  local f waited=0
  for f in "$@"; do
    while [ ! -e "$f" ]; do
      if [ "$waited" -ge 5 ]; then
        echo "[slurm-gpu] input $f not found after 5 s (--latency-wait)" >&2
        return 1
      fi
      sleep 1
      waited=$((waited + 1))
    done
  done
}
slurm_gpu_inputs_ready 'data/a b.txt' 'data/$(touch x)' && /usr/bin/bash -c 'set -euo pipefail;  wc -l '"'"'data/a b.txt'"'"' > '"'"'counts/a b.txt'"'"''
rc=$?
printf '{"ts": %s, "event": "ended", "step": "%s", "source": "job", "job_id": "%s", "exit_code": %d}\n' "$(date +%s.%N | cut -c1-14)" "$SLURM_GPU_STEP" "$SLURM_GPU_JOB_ID" "$rc" >> "$SLURM_GPU_EVENT_LOG" || true
exit $rc
