"""Where a step's next job may run: not on the nodes where its last job failed (NODE_FAIL,
BOOT_FAIL, a stall's silent ranks), unless that leaves its partition too few nodes for it."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from . import slurm
from .spec import StepSpec


def without_failed_nodes(run: Callable[[list[str]], str], spec: StepSpec, step: str, failed_nodes: str,
                         default_partition: Callable[[str | None], str | None], logger: Any) -> StepSpec:
    """The step's spec with `failed_nodes` (a Slurm node list) excluded, unless that would leave its
    partition too few nodes to run it (it would then pend forever)."""
    try:
        failed = set(slurm.parse_names(run(slurm.hostnames_argv(failed_nodes))))
        partition = spec.partition or default_partition(spec.clusters)
        nodes = set(slurm.parse_names(run(slurm.partition_nodes_argv(partition, spec.clusters))))
    except slurm.SlurmError as e:
        logger.warning(f"slurm-gpu: step {step}: not excluding nodes {failed_nodes}: {e}")
        return spec
    excluded = tuple(sorted(set(spec.exclude) | failed))
    left = len(nodes - set(excluded))
    if left < spec.nodes:
        logger.warning(f"slurm-gpu: step {step}: not excluding {', '.join(sorted(failed))}: the partition would "
                       f"have {left} node(s) left for a step of {spec.nodes}")
        return spec
    logger.info(f"slurm-gpu: step {step}: its new job excludes {', '.join(excluded)}, where an earlier job of it "
                "failed (--slurm-gpu-reuse-failed-nodes turns this off)")
    return dataclasses.replace(spec, exclude=excluded)
