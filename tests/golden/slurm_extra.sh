#!/bin/bash
# slurm-gpu: step train/model=vit (rule train); submitted on the standard input of sbatch --parsable
#SBATCH --job-name=sg-train
#SBATCH --output=/work/wf/.snakemake/slurm-gpu/logs/train/model=vit/%j.log
#SBATCH --open-mode=append
#SBATCH --chdir=/work/wf
#SBATCH --export=ALL
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=2
#SBATCH --gpus-per-node=2
#SBATCH --cpus-per-task=1
#SBATCH --mem-per-cpu=2000
#SBATCH --signal=USR1@90
#SBATCH --requeue
#SBATCH --comment="slurm-gpu step=train/model=vit"
#SBATCH --exclusive
#SBATCH --reservation="maint window"
#SBATCH -x
#SBATCH n3

export PYTHONFAULTHANDLER=1
export SLURM_GPU_STEP=train/model=vit
# the id the executor follows this job by (contract.job_id): an array task's is <array id>_<task id>
if [ -n "${SLURM_ARRAY_TASK_ID:-}" ]; then SLURM_GPU_JOB_ID="${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"; else SLURM_GPU_JOB_ID="$SLURM_JOB_ID"; fi
export SLURM_GPU_JOB_ID
export SLURM_GPU_NODES=1
export SLURM_GPU_GPUS_PER_NODE=2
export SLURM_GPU_TASKS_PER_NODE=2
export SLURM_GPU_CHECKPOINT_DIR=/work/wf/.snakemake/slurm-gpu/checkpoints/train/model=vit
export SLURM_GPU_REQUEUE_SIGNAL=USR1
export SLURM_GPU_EVENT_LOG=/work/wf/.snakemake/slurm-gpu/events/train/model=vit.jsonl
(umask 077 && mkdir -p "$SLURM_GPU_CHECKPOINT_DIR")
export SRUN_CPUS_PER_TASK=1
# one rank that dies ends the step at once: the others would wait in their next collective
# until the process group's timeout (30 minutes in Lightning)
export SLURM_KILL_BAD_EXIT=1
export SLURM_GPU_HEARTBEAT_DIR=/work/wf/.snakemake/slurm-gpu/heartbeats/train/model=vit
(umask 077 && mkdir -p "$SLURM_GPU_HEARTBEAT_DIR")
# rank 0 runs on the first host of the allocation
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export MASTER_ADDR
# Lightning's own formula (15000 + last 4 digits of the job id): the same port whichever side
# computes it, and the same again after a requeue
export MASTER_PORT=$(( 15000 + 10#$(printf '%s' "$SLURM_JOB_ID" | tail -c 4) ))

echo "[slurm-gpu] job $SLURM_JOB_ID on $SLURM_JOB_NODELIST, restart ${SLURM_RESTART_COUNT:-0}, $(date -Is)"
# one event per start, also after each requeue (every value here is digits, a safe step name or a
# Slurm node list, so printf makes valid JSON)
printf '{"ts": %s, "event": "started", "step": "%s", "source": "job", "job_id": "%s", "nodes": "%s", "num_nodes": %d, "restart": %d}\n' "$(date +%s.%N | cut -c1-14)" "$SLURM_GPU_STEP" "$SLURM_GPU_JOB_ID" "$SLURM_JOB_NODELIST" "${SLURM_JOB_NUM_NODES:-0}" "${SLURM_RESTART_COUNT:-0}" >> "$SLURM_GPU_EVENT_LOG" || true
# the step runs in the batch step itself, with the SLURM_* environment intact, so the rule's
# own srun gets the whole allocation
finished=/work/wf/.snakemake/slurm-gpu/finished/train/model=vit/"$SLURM_JOB_ID"
if [ -e "$finished" ]; then
  echo "[slurm-gpu] the step finished in an earlier run of job $SLURM_JOB_ID; Slurm requeued the job after that: not run again"
  printf '{"ts": %s, "event": "already_finished", "step": "%s", "source": "job", "job_id": "%s", "restart": %d}\n' "$(date +%s.%N | cut -c1-14)" "$SLURM_GPU_STEP" "$SLURM_GPU_JOB_ID" "${SLURM_RESTART_COUNT:-0}" >> "$SLURM_GPU_EVENT_LOG" || true
  rc=0
else
  python -m snakemake --snakefile /work/wf/Snakefile --target-jobs 'STEP' --cores all --mode remote --executor local
  rc=$?
  if [ "$rc" = 0 ]; then (umask 077 && mkdir -p /work/wf/.snakemake/slurm-gpu/finished/train/model=vit && : > "$finished"); fi
fi
printf '{"ts": %s, "event": "ended", "step": "%s", "source": "job", "job_id": "%s", "exit_code": %d}\n' "$(date +%s.%N | cut -c1-14)" "$SLURM_GPU_STEP" "$SLURM_GPU_JOB_ID" "$rc" >> "$SLURM_GPU_EVENT_LOG" || true
exit $rc
