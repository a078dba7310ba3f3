#!/bin/bash
# slurm-gpu: step mpi/sample=a (rule mpi); submitted on the standard input of sbatch --parsable
#SBATCH --job-name=proj-mpi
#SBATCH --output=/work/wf/.snakemake/slurm-gpu/logs/mpi/sample=a/%j.log
#SBATCH --open-mode=append
#SBATCH --chdir=/work/wf
#SBATCH --export=ALL
#SBATCH --ntasks=8
#SBATCH --gres=tmpspace:10G
#SBATCH --cpus-per-task=2
#SBATCH --mem-per-cpu=1000
#SBATCH --partition=short,long
#SBATCH --qos=normal
#SBATCH --clusters=hpc2
#SBATCH --reservation=maint
#SBATCH --comment="slurm-gpu step=mpi/sample=a"

export PYTHONFAULTHANDLER=1
export SLURM_GPU_STEP=mpi/sample=a
# the id the executor follows this job by (contract.job_id): an array task's is <array id>_<task id>
if [ -n "${SLURM_ARRAY_TASK_ID:-}" ]; then SLURM_GPU_JOB_ID="${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"; else SLURM_GPU_JOB_ID="$SLURM_JOB_ID"; fi
export SLURM_GPU_JOB_ID
export SLURM_GPU_NODES=1
export SLURM_GPU_GPUS_PER_NODE=0
export SLURM_GPU_TASKS_PER_NODE=1
export SLURM_GPU_CHECKPOINT_DIR=/work/wf/.snakemake/slurm-gpu/checkpoints/mpi/sample=a
export SLURM_GPU_EVENT_LOG=/work/wf/.snakemake/slurm-gpu/events/mpi/sample=a.jsonl
(umask 077 && mkdir -p "$SLURM_GPU_CHECKPOINT_DIR")
export SRUN_CPUS_PER_TASK=2

echo "[slurm-gpu] job $SLURM_JOB_ID on $SLURM_JOB_NODELIST, restart ${SLURM_RESTART_COUNT:-0}, $(date -Is)"
# one event per start, also after each requeue (every value here is digits, a safe step name or a
# Slurm node list, so printf makes valid JSON)
printf '{"ts": %s, "event": "started", "step": "%s", "source": "job", "job_id": "%s", "nodes": "%s", "num_nodes": %d, "restart": %d}\n' "$(date +%s.%N | cut -c1-14)" "$SLURM_GPU_STEP" "$SLURM_GPU_JOB_ID" "$SLURM_JOB_NODELIST" "${SLURM_JOB_NUM_NODES:-0}" "${SLURM_RESTART_COUNT:-0}" >> "$SLURM_GPU_EVENT_LOG" || true
# the step runs in the batch step itself, with the SLURM_* environment intact, so the rule's
# own srun gets the whole allocation
python -m snakemake --snakefile /work/wf/Snakefile --target-jobs 'STEP' --cores all --mode remote --executor local
rc=$?
printf '{"ts": %s, "event": "ended", "step": "%s", "source": "job", "job_id": "%s", "exit_code": %d}\n' "$(date +%s.%N | cut -c1-14)" "$SLURM_GPU_STEP" "$SLURM_GPU_JOB_ID" "$rc" >> "$SLURM_GPU_EVENT_LOG" || true
exit $rc
