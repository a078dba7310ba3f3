"""Snakemake test workflows that are expected to fail under `--executor slurm-gpu` on the local cluster
(tests/conformance/run.py), and those not run at all, each with the reason.

KNOWN_FAILURES is only for failures outside slurm-gpu: a workflow that no remote executor can pass
(Snakemake itself behaves differently for remote jobs), one that needs more than the local cluster has
(2 nodes x 4 CPUs x 4000 MB), or one that an sbatch rule shared with the official Slurm plugin refuses.
A failure caused by a slurm-gpu bug does not belong here: it must stay red until it is fixed.
"""

_CLUSTER = "the local cluster's nodes have 4 CPUs and 4000 MB"

KNOWN_FAILURES: dict[str, str] = {
    # more than one node of the local cluster has
    "test_threads": f"rule asks threads=20 (with --cores 20); {_CLUSTER}: refused before submission (Slurm "
                    "would keep the job pending for ever, reason PartitionConfig)",
    "test_set_threads": f"--set-threads gives the rule 5 threads; {_CLUSTER}, so sbatch refuses it",
    "test_pipes_multiple": f"the pipe group runs 5 jobs at once, 5 CPUs on one node; {_CLUSTER}",
    "test_cores_limited_by_global_supply": f"the group asks mem_mb=40000 (rule a_1); {_CLUSTER}",
    "test_group_jobs_resources": f"the group asks up to 40000 MB per rule and --default-resources mem_mb=0; {_CLUSTER}",
    "test_group_job_resources_with_pipe": f"the pipe group asks 60000+ MB and --default-resources mem_mb=0; {_CLUSTER}",
    "test_scopes_submitted_to_cluster": f"the group asks mem_mb=40000 and --default-resources mem_mb=0; {_CLUSTER}",
    # Snakemake's own behaviour for remote jobs (any executor that runs a job-side Snakemake)
    "test_default_resources_mebibytes": "Snakemake forwards --default-resources mem_mib=953.67 to the job-side "
                                        "Snakemake as mem_mb=953.67 (Resources.args keeps the raw MiB value under "
                                        "the normalized name), so the group's job-side Snakemake sees mem_mb=954, "
                                        "not 1000",
    "test_config_replacing": "--replace-workflow-config is not passed on to the job-side Snakemake, which then "
                             "formats {name} from the Snakefile's config as it stood before (the official plugin "
                             "fails it the same way on this cluster: make test-conformance-official)",
    "test_update_flag_fail": "update() outputs are backed up and restored by the job-side Snakemake; the main "
                             "Snakemake then finds no backup ('Cannot restore test.txt: no backup found') and "
                             "removes the restored file as a failed job's output",
    "test_priority": "needs --cores 1 to run the ready jobs one at a time in priority order; with a remote "
                     "executor --cores only caps threads and all ready jobs are submitted at once",
    "test_groupid_expand_local": "checks the local executor's group ids ('local'); under a remote executor "
                                 "Snakemake expands {resources.groupid}-like values to the group's UUID "
                                 "(test_groupid_expand_cluster, the remote variant, passes)",
    # refused by sbatch flag rules that the official Slurm plugin has too
    "test_set_resources_complex_cli": "slurm_extra contains --gres, which slurm-gpu (like the official Slurm "
                                      "plugin) refuses in slurm_extra",
}

# seconds instead of run.py's --timeout for known failures that only end at the timeout
TIMEOUT_S: dict[str, float] = {"test_threads": 40}

SKIPPED: dict[str, str] = {
    # would only wait for the timeout
    "test_threads_overwrite": f"asks threads=20; {_CLUSTER} (refused before submission, as test_threads)",
    "test_scheduler_sequential_all_cores": f"asks threads=89; {_CLUSTER} (refused before submission)",
    "test_pipes_fail": "hangs with the local executor too (the failed pipe's consumer is never ended)",
    # software that is not installed here or in CI
    "test_ioutils": "needs pandas", "test_params_pickling": "needs pandas", "test_paramspace": "needs pandas",
    "test_validate": "needs pandas", "test_issue2685": "needs pandas",
    "test_peppy": "needs peppy", "test_modules_peppy": "needs peppy",
    "test_benchmark": "needs stress-ng", "test_benchmark_jsonl": "needs stress-ng",
    "test_ancient": "needs snakemake-storage-plugin-http and network access",
    "test_modules_prefix": "needs snakemake-storage-plugin-http and network access",
    "test_module_onstart_onsuccess": "needs snakemake-storage-plugin-http and network access",
    "test_delete_temp_fs": "needs snakemake-storage-plugin-fs",
    "test_checkpoint_open": "needs snakemake-storage-plugin-fs",
    "test_storage": "needs an S3 server (snakemake-storage-plugin-s3)",
    "test_singularity_cluster": "needs apptainer/singularity and network access",
    "test_container": "needs apptainer/singularity and network access",
    "test_jupyter_notebook": "needs conda and jupyter",
}
