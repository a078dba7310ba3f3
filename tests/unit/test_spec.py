"""Rule resources -> StepSpec, and the pre-flight checks that refuse a step before anything is
submitted. Every refusal must name the rule, the resource and a fix (HINT)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from snakemake_executor_plugin_slurm_gpu.spec import (
    ClusterInfo,
    ResourceError,
    StepSpec,
    build_spec,
    check_capacity,
    check_launch,
    check_signal,
    parse_slurm_extra,
)

RULE = "train_model"


def refused(excinfo: pytest.ExceptionInfo[ResourceError], resource: str) -> str:
    """The message of a ResourceError, after checking that it names rule, resource and a HINT."""
    error = excinfo.value
    message = str(error)
    assert error.rule == RULE
    assert error.resource == resource
    assert f"'{RULE}'" in message
    assert f"'{resource}'" in message
    assert "HINT:" in message
    assert message.split("HINT:", 1)[1].strip(), "the HINT must say what to do"
    return message


# ---------------------------------------------------------------- build_spec: what a rule asks for

@pytest.mark.parametrize(
    ("resources", "threads", "expected"),
    [
        pytest.param({}, 1,
                     dict(nodes=1, gpus_per_node=0, tasks_per_node=1, cpus_per_task=1, gpus=0,
                          distributed=False, uses_gpus=False),
                     id="cpu-rule-defaults"),
        pytest.param({}, 8, dict(nodes=1, tasks_per_node=1, cpus_per_task=8, distributed=False),
                     id="cpu-rule-threads-become-cpus_per_task"),
        pytest.param({}, 0, dict(cpus_per_task=1), id="threads-0-still-one-cpu"),
        pytest.param({"nodes": 2}, 4,
                     dict(nodes=2, gpus_per_node=0, tasks_per_node=1, cpus_per_task=4, distributed=True,
                          uses_gpus=False),
                     id="cpu-multinode-is-distributed"),
        pytest.param({"gpus": 1}, 1,
                     dict(nodes=1, gpus_per_node=1, tasks_per_node=1, gpus=1, distributed=False, uses_gpus=True),
                     id="one-gpu"),
        # one rank per GPU: a GPU rule's threads do not multiply into every rank
        pytest.param({"gpus": 1}, 8, dict(cpus_per_task=1), id="gpu-rule-ignores-threads"),
        pytest.param({"gpus": 4}, 1,
                     dict(nodes=1, gpus_per_node=4, tasks_per_node=4, gpus=4, distributed=True),
                     id="four-gpus-one-node"),
        pytest.param({"gpus": 4, "nodes": 2}, 1,
                     dict(nodes=2, gpus_per_node=2, tasks_per_node=2, gpus=4, distributed=True, uses_gpus=True),
                     id="gpus-is-the-total-split-over-nodes"),
        pytest.param({"gpus": 4, "nodes": 2, "cpus_per_task": 6}, 1, dict(cpus_per_task=6),
                     id="explicit-cpus_per_task"),
        pytest.param({"gpu": 2}, 1, dict(gpus_per_node=2, tasks_per_node=2), id="gpu-is-a-synonym"),
        pytest.param({"gpus": 2, "gpu": 2}, 1, dict(gpus_per_node=2), id="gpu-and-gpus-equal"),
        pytest.param({"gpus": 0, "gpu": 0}, 1, dict(gpus_per_node=0, uses_gpus=False), id="zero-gpus"),
        pytest.param({"gpus": "4", "nodes": "2"}, 1, dict(nodes=2, gpus_per_node=2), id="digit-strings"),
        pytest.param({"gpus": 4.0, "nodes": 2.0}, 1, dict(nodes=2, gpus_per_node=2), id="integral-floats"),
        pytest.param({"nodes": None, "gpus": None, "cpus_per_task": None}, 3,
                     dict(nodes=1, gpus_per_node=0, cpus_per_task=3), id="none-means-default"),
        pytest.param({"runtime": "120"}, 1, dict(time_min=120), id="runtime-digit-string"),
        pytest.param({"runtime": " 30 "}, 1, dict(time_min=30), id="runtime-padded-digits"),
        pytest.param({"runtime": 45}, 1, dict(time_min=45), id="runtime-int"),
        pytest.param({"mem_mb": 16000}, 1, dict(mem_mb=16000, mem_mb_per_cpu=None), id="mem_mb"),
        pytest.param({"mem_mb": 16000, "mem_mb_per_cpu": 2000}, 1, dict(mem_mb=None, mem_mb_per_cpu=2000),
                     id="mem_mb_per_cpu-wins-over-mem_mb"),
        pytest.param({"slurm_partition": "gpu", "slurm_account": "proj", "constraint": "a100&ib",
                      "qos": "high"}, 1,
                     dict(partition="gpu", account="proj", constraint="a100&ib", qos="high"),
                     id="text-resources-carried-over"),
        pytest.param({"slurm_partition": "", "slurm_account": None}, 1, dict(partition=None, account=None),
                     id="empty-text-means-unset"),
        pytest.param({"gpus": 2, "gpu_model": "a100"}, 1, dict(gpu_model="a100"), id="gpu_model"),
        pytest.param({"gpus": 2, "gpu_model": "1g.10gb"}, 1, dict(gpu_model="1g.10gb"), id="gpu_model-mig"),
        pytest.param({"slurm_extra": "--exclusive --reservation=maint"}, 1,
                     dict(extra=("--exclusive", "--reservation=maint")), id="slurm_extra-words"),
    ],
)
def test_build_spec(resources: dict[str, Any], threads: int, expected: dict[str, Any]) -> None:
    spec = build_spec(RULE, resources, threads=threads)
    assert spec.rule == RULE
    assert {name: getattr(spec, name) for name in expected} == expected


def test_spec_is_frozen() -> None:
    spec = build_spec(RULE, {"gpus": 2})
    with pytest.raises(AttributeError):
        spec.nodes = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("resources", "resource", "fragment"),
    [
        # not a whole number
        pytest.param({"nodes": "two"}, "nodes", "'two', not a whole number", id="nodes-word"),
        pytest.param({"nodes": 1.5}, "nodes", "1.5, not a whole number", id="nodes-fraction"),
        pytest.param({"nodes": True}, "nodes", "True, not a whole number", id="nodes-bool"),
        pytest.param({"gpus": "two"}, "gpus", "not a whole number", id="gpus-word"),
        pytest.param({"gpus": 1.5}, "gpus", "not a whole number", id="gpus-fraction"),
        pytest.param({"gpus": True}, "gpus", "not a whole number", id="gpus-bool"),
        pytest.param({"gpu": "two"}, "gpu", "not a whole number", id="gpu-word"),
        pytest.param({"gpu": True}, "gpu", "not a whole number", id="gpu-bool"),
        pytest.param({"cpus_per_task": 2.5}, "cpus_per_task", "not a whole number", id="cpus_per_task-fraction"),
        pytest.param({"mem_mb": "16G"}, "mem_mb", "not a whole number", id="mem_mb-with-unit"),
        pytest.param({"mem_mb_per_cpu": "2G"}, "mem_mb_per_cpu", "not a whole number", id="mem_mb_per_cpu-unit"),
        pytest.param({"runtime": "2h"}, "runtime", "not a whole number", id="runtime-with-unit"),
        pytest.param({"runtime": "-5"}, "runtime", "not a whole number", id="runtime-signed-string"),
        # not positive
        pytest.param({"nodes": -1}, "nodes", "must be at least 1", id="nodes-negative"),
        pytest.param(
            {"nodes": 0}, "nodes", "must be at least 1", id="nodes-zero"),
        pytest.param({"gpus": -2}, "gpus", "must be at least 0", id="gpus-negative"),
        pytest.param({"cpus_per_task": 0}, "cpus_per_task", "must be at least 1", id="cpus_per_task-zero"),
        pytest.param({"runtime": 0}, "runtime", "must be at least 1", id="runtime-zero"),
        # geometry
        pytest.param({"gpus": 3, "nodes": 2}, "gpus", "use gpus=2 or 4", id="gpus-not-divisible"),
        pytest.param({"gpus": 1, "nodes": 2}, "gpus", "use gpus=2 (", id="fewer-gpus-than-nodes"),
        pytest.param({"gpus": 2, "gpu": 3}, "gpus", "is 2 but 'gpu' is 3", id="gpu-and-gpus-differ"),
        # gpu_model
        pytest.param({"gpus": 2, "gpu_model": "a100:2"}, "gpu_model", "'a100:2'", id="gpu_model-colon"),
        pytest.param({"gpus": 2, "gpu_model": "a 100"}, "gpu_model", "'a 100'", id="gpu_model-space"),
        pytest.param({"gpus": 2, "gpu_model": "a100;rm"}, "gpu_model", "'a100;rm'", id="gpu_model-semicolon"),
        pytest.param({"gpus": 2, "gpu_model": 'a"100'}, "gpu_model", "double quote", id="gpu_model-quote"),
        # text that cannot go into an #SBATCH line
        pytest.param({"slurm_partition": "gpu\n#SBATCH --qos=high"}, "slurm_partition", "newline",
                     id="partition-newline"),
        pytest.param({"slurm_partition": 'gpu"'}, "slurm_partition", "double quote", id="partition-quote"),
        pytest.param({"slurm_account": "a\rb"}, "slurm_account", "newline", id="account-carriage-return"),
        pytest.param({"constraint": "a\x00b"}, "constraint", "control character", id="constraint-nul"),
        pytest.param({"constraint": "a\x85b"}, "constraint", "control character", id="constraint-next-line"),
        pytest.param({"qos": "high\n"}, "qos", "newline", id="qos-newline"),
        pytest.param({"slurm_extra": '--reservation="a\nb"'}, "slurm_extra", "newline", id="extra-newline"),
        pytest.param({"nodes": 2, "min_nodes": 3, "gpus": 4}, "min_nodes", "more than nodes=2", id="min-above-nodes"),
        pytest.param({"nodes": 2, "min_nodes": 0, "gpus": 4}, "min_nodes", "from 1 to nodes=2", id="min-zero"),
        pytest.param({"nodes": 2, "min_nodes": "two"}, "min_nodes", "from 1 to nodes=2", id="min-not-a-number"),
        pytest.param({"tasks": 8, "min_nodes": 1}, "min_nodes", "a total (tasks)", id="min-with-a-task-total"),
    ],
)
def test_build_spec_refuses(resources: dict[str, Any], resource: str, fragment: str) -> None:
    with pytest.raises(ResourceError) as excinfo:
        build_spec(RULE, resources)
    assert fragment in refused(excinfo, resource)


def test_zero_memory_asks_for_none_and_a_gpu_model_without_gpus_asks_for_no_gpu() -> None:
    # valid elsewhere: Snakemake's tests pass --default-resources mem_mb=0 and gpu_model=...; Slurm's
    # --mem=0 would be the whole node, and a default gpu_model must not block every CPU rule
    spec = build_spec(RULE, {"mem_mb": 0, "gpu_model": "a100"})
    assert (spec.mem_mb, spec.mem_mb_per_cpu, spec.gpu_model, spec.gpus) == (None, None, None, 0)
    assert build_spec(RULE, {"mem_mb_per_cpu": 0, "mem_mb": 1000}).mem_mb == 1000


def test_resource_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        build_spec(RULE, {"nodes": "two"})


def test_mem_mb_is_dropped_not_checked_when_mem_mb_per_cpu_is_set() -> None:
    # mem_mb is not validated when mem_mb_per_cpu replaces it: it is dropped, not submitted
    spec = build_spec(RULE, {"mem_mb_per_cpu": 1000, "mem_mb": "whatever"})
    assert (spec.mem_mb, spec.mem_mb_per_cpu) == (None, 1000)


# ---------------------------------------------------------------- requeue: resumable steps and the warning signal

@pytest.mark.parametrize(
    ("resources", "kwargs", "expected"),
    [
        pytest.param({}, {}, dict(resumable=False, signal=None, signal_lead_s=None), id="cpu"),
        pytest.param({"nodes": 2}, {}, dict(resumable=False, signal=None, signal_lead_s=None), id="cpu-multinode"),
        pytest.param({"gpus": 0}, {}, dict(resumable=False, signal=None), id="zero-gpus"),
        # a CPU step is never signalled, whatever the rule or the settings say
        pytest.param({"signal_lead_s": 300}, {}, dict(resumable=False, signal=None, signal_lead_s=None),
                     id="cpu-ignores-rule-lead"),
        pytest.param({}, dict(requeue_signal="USR2", signal_lead_s=300), dict(resumable=False, signal=None),
                     id="cpu-ignores-settings"),
        pytest.param({"gpus": 1}, {}, dict(resumable=True, signal="USR1", signal_lead_s=90), id="gpu-defaults"),
        pytest.param({"gpus": 4, "nodes": 2}, {}, dict(resumable=True, signal="USR1", signal_lead_s=90),
                     id="multinode-gpu-defaults"),
        pytest.param({"gpu": 2}, {}, dict(resumable=True, signal="USR1"), id="gpu-synonym"),
        pytest.param({"gpus": 1}, dict(requeue_signal="SIGUSR2", signal_lead_s=120),
                     dict(resumable=True, signal="USR2", signal_lead_s=120), id="settings"),
        pytest.param({"gpus": 1, "signal_lead_s": 300}, dict(signal_lead_s=120),
                     dict(signal="USR1", signal_lead_s=300), id="rule-lead-beats-setting"),
        pytest.param({"gpus": 1, "signal_lead_s": "600"}, {}, dict(signal_lead_s=600), id="rule-lead-digit-string"),
        pytest.param({"gpus": 1, "signal_lead_s": 45.0}, {}, dict(signal_lead_s=45), id="rule-lead-integral-float"),
        pytest.param({"gpus": 1, "signal_lead_s": 1}, {}, dict(signal="USR1", signal_lead_s=1), id="rule-lead-1"),
        pytest.param({"gpus": 1, "signal_lead_s": 65535}, {}, dict(signal_lead_s=65535), id="rule-lead-max"),
        # 0: no warning signal, but the step still checkpoints and may be requeued/resubmitted
        pytest.param({"gpus": 1, "signal_lead_s": 0}, {}, dict(resumable=True, signal=None, signal_lead_s=None),
                     id="rule-lead-0"),
        pytest.param({"gpus": 1}, dict(signal_lead_s=0), dict(resumable=True, signal=None, signal_lead_s=None),
                     id="setting-lead-0"),
        pytest.param({"gpus": 1, "signal_lead_s": 60}, dict(signal_lead_s=0), dict(signal="USR1", signal_lead_s=60),
                     id="rule-lead-beats-setting-0"),
    ],
)
def test_build_spec_requeue(resources: dict[str, Any], kwargs: dict[str, Any], expected: dict[str, Any]) -> None:
    spec = build_spec(RULE, resources, **kwargs)
    assert {name: getattr(spec, name) for name in expected} == expected


@pytest.mark.parametrize(
    ("name", "normalised"),
    [
        ("USR1", "USR1"), ("usr1", "USR1"), ("SIGUSR1", "USR1"), ("sigusr1", "USR1"), (" SIGUSR2 ", "USR2"),
        ("Usr2", "USR2"), ("SiGuSr2", "USR2"), ("10", "USR1"), ("12", "USR2"),
    ],
)
def test_check_signal_normalises(name: str, normalised: str) -> None:
    assert check_signal(name) == normalised
    assert build_spec(RULE, {"gpus": 1}, requeue_signal=name).signal == normalised


@pytest.mark.parametrize(
    "name",
    ["", " ", "USR", "USR3", "SIGUSR", "SIG", "SIGSIGUSR1", "KILL", "SIGKILL", "STOP", "SIGSTOP", "B:USR1",
     "USR1@90", "USR1 USR2", "100", "-10", "1.5", "USR1;rm", "USR1\tUSR2"],
)
def test_check_signal_refuses_garbage(name: str) -> None:
    with pytest.raises(ValueError, match="USR1"):
        check_signal(name)


def test_build_spec_refuses_a_garbage_signal_setting_for_gpu_steps() -> None:
    with pytest.raises(ValueError, match="'SIGFOO'"):
        build_spec(RULE, {"gpus": 1}, requeue_signal="SIGFOO")


@pytest.mark.parametrize("name", ["9", "SIG9", "19", "0", "99"])
def test_check_signal_refuses_numbers_of_signals_it_refuses_by_name(name: str) -> None:
    with pytest.raises(ValueError):
        check_signal(name)


def test_signal_lead_none_means_default() -> None:
    assert build_spec(RULE, {"gpus": 1, "signal_lead_s": None}, signal_lead_s=120).signal_lead_s == 120


@pytest.mark.parametrize(
    ("resources", "kwargs", "fragment"),
    [
        pytest.param({"gpus": 1, "signal_lead_s": -1}, {}, "must be at least 0", id="negative"),
        pytest.param({"gpus": 1, "signal_lead_s": "-5"}, {}, "not a whole number", id="negative-string"),
        pytest.param({"gpus": 1, "signal_lead_s": 65536}, {}, "65536, above Slurm's limit of 65535", id="too-long"),
        pytest.param({"gpus": 1, "signal_lead_s": 10**9}, {}, "above Slurm's limit", id="far-too-long"),
        pytest.param({"gpus": 1, "signal_lead_s": "90s"}, {}, "not a whole number", id="with-unit"),
        pytest.param({"gpus": 1, "signal_lead_s": 1.5}, {}, "not a whole number", id="fraction"),
        pytest.param({"gpus": 1, "signal_lead_s": True}, {}, "not a whole number", id="bool"),
        # the executor-wide default goes through the same check
        pytest.param({"gpus": 1}, dict(signal_lead_s=70000), "above Slurm's limit", id="setting-too-long"),
        pytest.param({"gpus": 1}, dict(signal_lead_s=-1), "must be at least 0", id="setting-negative"),
    ],
)
def test_build_spec_refuses_signal_lead(resources: dict[str, Any], kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ResourceError) as excinfo:
        build_spec(RULE, resources, **kwargs)
    assert fragment in refused(excinfo, "signal_lead_s")



# a lead must leave the step time to train: Slurm may warn up to 60 s early (sbatch --signal), and a
# step warned at once checkpoints, requeues and is warned again, for ever

@pytest.mark.parametrize(
    ("resources", "fragments"),
    [
        pytest.param({"gpus": 1, "runtime": 10, "signal_lead_s": 600}, ["is 600", "runtime is 10 minute(s) (600 s)",
                     "at most 479", "runtime to at least 13", "signal_lead_s=0"], id="lead-equals-runtime"),
        pytest.param({"gpus": 1, "runtime": 10, "signal_lead_s": 480}, ["is 480", "at most 479",
                     "runtime to at least 11"], id="one-second-over"),
        pytest.param({"gpus": 4, "nodes": 2, "runtime": 60, "signal_lead_s": 3600}, ["is 3600", "at most 3479"],
                     id="multinode"),
        # no positive lead fits 2 minutes: the hint does not offer one
        pytest.param({"gpus": 1, "runtime": 2, "signal_lead_s": 1}, ["is 1", "runtime to at least 3"],
                     id="no-lead-fits"),
        pytest.param({"gpus": 1, "runtime": "5", "signal_lead_s": "300"}, ["is 300", "at most 179"],
                     id="digit-strings"),
    ],
)
def test_a_rules_lead_that_leaves_no_time_to_train_is_refused(resources: dict[str, Any], fragments: list[str]) -> None:
    with pytest.raises(ResourceError) as excinfo:
        build_spec(RULE, resources)
    message = refused(excinfo, "signal_lead_s")
    assert "requeue for ever" in message
    for fragment in fragments:
        assert fragment in message
    if resources["runtime"] == 2:
        assert "at most" not in message


def test_a_rules_lead_is_refused_whatever_the_setting_says() -> None:
    with pytest.raises(ResourceError):
        build_spec(RULE, {"gpus": 1, "runtime": 10, "signal_lead_s": 480}, signal_lead_s=0)


@pytest.mark.parametrize(
    ("runtime", "lead"),
    [(10, 479), (11, 539), (3, 59), (4, 119), (60, 3479)],
)
def test_the_longest_lead_that_fits_is_accepted(runtime: int, lead: int) -> None:
    # runtime*60 - 60 s (Slurm's slack) - 60 s (MIN_TRAIN_S) - 1
    spec = build_spec(RULE, {"gpus": 1, "runtime": runtime, "signal_lead_s": lead})
    assert (spec.signal, spec.signal_lead_s) == ("USR1", lead)
    with pytest.raises(ResourceError):
        build_spec(RULE, {"gpus": 1, "runtime": runtime, "signal_lead_s": lead + 1})


@pytest.mark.parametrize(
    ("runtime", "setting", "expected_lead"),
    [
        # the default 90 s needs runtime >= 4
        pytest.param(1, 90, None, id="default-runtime-1"),
        pytest.param(2, 90, None, id="default-runtime-2"),
        pytest.param(3, 90, None, id="default-runtime-3"),
        pytest.param(4, 90, 90, id="default-runtime-4"),
        pytest.param(10, 600, None, id="setting-too-long-for-runtime"),
        pytest.param(10, 480, None, id="setting-one-second-over"),
        pytest.param(10, 479, 479, id="setting-that-just-fits"),
    ],
)
def test_the_executor_wide_lead_is_dropped_not_refused_or_shrunk_where_it_does_not_fit(
        runtime: int, setting: int, expected_lead: int | None) -> None:
    # the rule never asked for this lead: it still runs, resumable, and gets a signal only where
    # the lead fits, never a shortened one
    spec = build_spec(RULE, {"gpus": 1, "runtime": runtime}, signal_lead_s=setting)
    assert spec.resumable
    assert spec.signal_lead_s == expected_lead
    assert spec.signal == ("USR1" if expected_lead else None)


def test_a_rules_own_lead_still_applies_where_the_setting_is_dropped() -> None:
    spec = build_spec(RULE, {"gpus": 1, "runtime": 3, "signal_lead_s": 30})
    assert (spec.signal, spec.signal_lead_s) == ("USR1", 30)


@pytest.mark.parametrize(
    "resources",
    [
        pytest.param({"gpus": 1, "signal_lead_s": 65535}, id="no-runtime-rule-lead"),
        pytest.param({"gpus": 1, "runtime": None, "signal_lead_s": 600}, id="runtime-none"),
        pytest.param({"gpus": 1}, id="no-runtime-default-lead"),
    ],
)
def test_without_a_runtime_the_lead_is_not_checked_against_it(resources: dict[str, Any]) -> None:
    # the partition's time limit is Slurm's to know, not ours
    spec = build_spec(RULE, resources, signal_lead_s=90)
    assert spec.time_min is None
    assert spec.signal == "USR1"
    assert spec.signal_lead_s == resources.get("signal_lead_s", 90)


@pytest.mark.parametrize(
    "resources",
    [
        pytest.param({"runtime": 1, "signal_lead_s": 600}, id="cpu-step"),
        pytest.param({"gpus": 1, "runtime": 1, "signal_lead_s": 0}, id="lead-0"),
    ],
)
def test_a_step_without_a_signal_is_not_checked(resources: dict[str, Any]) -> None:
    assert build_spec(RULE, resources).signal is None


# ---------------------------------------------------------------- parse_slurm_extra

@pytest.mark.parametrize(
    ("text", "words"),
    [
        pytest.param(None, (), id="none"),
        pytest.param("", (), id="empty"),
        pytest.param("--exclusive", ("--exclusive",), id="flag"),
        pytest.param("--exclusive --reservation=foo", ("--exclusive", "--reservation=foo"), id="two-words"),
        pytest.param("--reservation='maint window' --mail-type=END",
                     ("--reservation=maint window", "--mail-type=END"), id="single-quoted-value"),
        pytest.param('--reservation="maint window" --mail-type=END',
                     ("--reservation=maint window", "--mail-type=END"), id="double-quoted-value"),
        pytest.param("--reservation 'maint window'", ("--reservation", "maint window"), id="single-quoted-word"),
        pytest.param("  --exclusive\t-x n3  ", ("--exclusive", "-x", "n3"), id="extra-whitespace"),
        pytest.param("--mail-user=me@example.org --begin=now+1hour",
                     ("--mail-user=me@example.org", "--begin=now+1hour"), id="unmanaged-values"),
        pytest.param("--dependency=afterok:12 $(rm -rf ~)", ("--dependency=afterok:12", "$(rm", "-rf", "~)"),
                     id="no-shell-expansion"),
        # a flag that merely starts with the text of a managed one is a different flag
        pytest.param("--comment-typo=x", ("--comment-typo=x",), id="comment-typo-is-not-comment"),
        pytest.param("--gres-flags=enforce-binding", ("--gres-flags=enforce-binding",), id="gres-flags"),
        pytest.param("--nodelist=n[1-2]", ("--nodelist=n[1-2]",), id="nodelist"),
        pytest.param("--exclude n3", ("--exclude", "n3"), id="value-word-not-a-flag"),
    ],
)
def test_parse_slurm_extra_passes(text: str | None, words: tuple[str, ...]) -> None:
    assert parse_slurm_extra(RULE, text) == words


@pytest.mark.parametrize(
    ("text", "flag", "fix"),
    [
        ("--nodes=2", "--nodes", "use the resource 'nodes' instead"),
        ("--nodes 2", "--nodes", "use the resource 'nodes' instead"),
        ("-N 2", "-N", "use the resource 'nodes' instead"),
        ("-N2", "-N", "use the resource 'nodes' instead"),
        ("--ntasks=4", "--ntasks", "use the resource 'tasks' instead"),
        ("-n4", "-n", "use the resource 'tasks' instead"),
        ("--ntasks-per-node=2", "--ntasks-per-node", "use the resource 'tasks_per_node' instead"),
        ("--cpus-per-gpu=4", "--cpus-per-gpu", "use the resource 'cpus_per_gpu' instead"),
        ("--clusters=other", "--clusters", "use the resource 'clusters' instead"),
        ("-M other", "-M", "use the resource 'clusters' instead"),
        ("--gpus-per-task=1", "--gpus-per-task", "use the resource 'gpus' instead"),
        ("--gpus=4", "--gpus", "use the resource 'gpus' instead"),
        ("-G 4", "-G", "use the resource 'gpus' instead"),
        ("--gres=gpu:a100:2", "--gres", "use the resource 'gres' instead"),
        ("--cpus-per-task=8", "--cpus-per-task", "use the resource 'cpus_per_task' instead"),
        ("-c8", "-c", "use the resource 'cpus_per_task' instead"),
        ("--mem=4G", "--mem", "use the resource 'mem_mb' instead"),
        ("--time=10", "--time", "use the resource 'runtime' instead"),
        ("-t 10", "-t", "use the resource 'runtime' instead"),
        ("-p debug", "-p", "use the resource 'slurm_partition' instead"),
        ("-pdebug", "-p", "use the resource 'slurm_partition' instead"),
        ("--partition=debug", "--partition", "use the resource 'slurm_partition' instead"),
        ("-A proj", "-A", "use the resource 'slurm_account' instead"),
        ("--signal=USR1@60", "--signal", "remove it"),
        ("--requeue", "--requeue", "remove it"),
        ("--output=/tmp/x.log", "--output", "remove it"),
        ("-o /tmp/x.log", "-o", "remove it"),
        ("--job-name=x", "--job-name", "remove it"),
        ("--export=NONE", "--export", "remove it"),
        ("--exclusive --nodes=3", "--nodes", "use the resource 'nodes' instead"),
        ("--reservation='a b' -N 3", "-N", "use the resource 'nodes' instead"),
    ],
)
def test_parse_slurm_extra_refuses_managed_flags(text: str, flag: str, fix: str) -> None:
    with pytest.raises(ResourceError) as excinfo:
        parse_slurm_extra(RULE, text)
    message = refused(excinfo, "slurm_extra")
    assert f"contains {flag}, which slurm-gpu manages" in message
    assert fix in message.split("HINT:", 1)[1]


@pytest.mark.parametrize("text", ["--part=debug", "--ntasks-per-n=2", "--gpus-per-t=1", "--sig=USR1@60"])
def test_parse_slurm_extra_refuses_abbreviated_managed_flags(text: str) -> None:
    with pytest.raises(ResourceError):
        parse_slurm_extra(RULE, text)


@pytest.mark.parametrize("text", [
    "--reservation='maint",
    "--mail-type=END --comment-x='a",
    pytest.param('--reservation="maint'),
])
def test_parse_slurm_extra_unclosed_quote(text: str) -> None:
    with pytest.raises(ResourceError) as excinfo:
        parse_slurm_extra(RULE, text)
    assert "close the quotes" in refused(excinfo, "slurm_extra")


def test_build_spec_refuses_managed_flag_in_slurm_extra() -> None:
    with pytest.raises(ResourceError) as excinfo:
        build_spec(RULE, {"gpus": 4, "nodes": 2, "slurm_extra": "--gpus-per-task=1"})
    refused(excinfo, "slurm_extra")


# ---------------------------------------------------------------- check_launch

DISTRIBUTED = build_spec(RULE, {"gpus": 4, "nodes": 2})


@pytest.mark.parametrize(
    "shell",
    [
        "srun python train.py",
        "  \nexport A=1; srun python x",
        "FOO=1 srun python",
        "FOO=1 BAR=x srun python train.py",
        "cd models && srun python train.py",
        "set -e\nmkdir -p out\nsrun python train.py --out {output}",
        "exec srun python train.py",
        "time srun python train.py",
        "python prepare.py; srun python train.py 2>&1 | tee log",
    ],
)
def test_check_launch_accepts_srun(shell: str) -> None:
    check_launch(DISTRIBUTED, shell)


@pytest.mark.parametrize(
    "shell",
    [
        "python train.py",
        "echo srun",
        "python train.py --launcher srun",
        "srun_wrapper.sh python train.py",
        "  \n ",
    ],
)
def test_check_launch_refuses_command_without_srun(shell: str) -> None:
    with pytest.raises(ResourceError) as excinfo:
        check_launch(DISTRIBUTED, shell)
    message = refused(excinfo, "gpus/nodes")
    assert "srun" in message
    assert "Initializing distributed" in message
    assert "2 node(s) x 2 GPU(s)" in message


@pytest.mark.parametrize(
    "shell",
    [
        pytest.param(None, id="no-shell"),
        pytest.param("", id="empty-shell"),
        pytest.param("/usr/bin/srun python train.py", id="srun-by-path"),
        pytest.param("env NCCL_DEBUG=INFO srun python train.py", id="env-prefix"),
    ],
)
def test_check_launch_edge_cases(shell: str | None) -> None:
    if not shell:
        with pytest.raises(ResourceError) as excinfo:
            check_launch(DISTRIBUTED, shell)
        message = refused(excinfo, "gpus/nodes")
        assert "srun" in message and "Initializing distributed" in message
    else:
        check_launch(DISTRIBUTED, shell)


@pytest.mark.parametrize(
    "resources", [{}, {"gpus": 1}, {"gpus": 0}], ids=["cpu", "one-gpu", "zero-gpus"])
@pytest.mark.parametrize("shell", [None, "", "python train.py", "echo srun"])
def test_check_launch_ignores_non_distributed_steps(resources: dict[str, Any], shell: str | None) -> None:
    spec = build_spec(RULE, resources)
    assert not spec.distributed
    check_launch(spec, shell)


@pytest.mark.parametrize("resources", [{"gpus": 2}, {"nodes": 2}], ids=["two-gpus-one-node", "cpu-two-nodes"])
def test_check_launch_applies_to_every_distributed_shape(resources: dict[str, Any]) -> None:
    with pytest.raises(ResourceError):
        check_launch(build_spec(RULE, resources), "python train.py")


# ---------------------------------------------------------------- check_capacity

CLUSTER = ClusterInfo(gpus_per_node={"debug": 0, "gpu": 4, "big": 8}, default_partition="debug")


def spec_for(**resources: Any) -> StepSpec:
    return build_spec(RULE, resources)


@pytest.mark.parametrize(
    ("spec", "cluster"),
    [
        pytest.param(spec_for(), CLUSTER, id="cpu-on-default"),
        pytest.param(spec_for(gpus=4, slurm_partition="gpu"), CLUSTER, id="full-node"),
        pytest.param(spec_for(gpus=8, nodes=2, slurm_partition="gpu"), CLUSTER, id="two-full-nodes"),
        pytest.param(spec_for(gpus=8, slurm_partition="big"), CLUSTER, id="big-node"),
        pytest.param(spec_for(gpus=2), ClusterInfo({"gpu": 4}, default_partition="gpu"), id="gpu-default"),
        pytest.param(spec_for(slurm_partition="debug"), ClusterInfo({"debug": 0}), id="named-without-default"),
    ],
)
def test_check_capacity_accepts(spec: StepSpec, cluster: ClusterInfo) -> None:
    check_capacity(spec, cluster)


def test_check_capacity_unknown_partition_lists_known_ones() -> None:
    with pytest.raises(ResourceError) as excinfo:
        check_capacity(spec_for(slurm_partition="gpus"), CLUSTER)
    message = refused(excinfo, "slurm_partition")
    assert "'gpus'" in message
    assert "use one of: big, debug, gpu" in message


def test_check_capacity_uses_default_partition() -> None:
    # no slurm_partition: Slurm will use the default, so that is the one checked
    with pytest.raises(ResourceError) as excinfo:
        check_capacity(spec_for(gpus=1), CLUSTER)
    message = refused(excinfo, "gpus")
    assert "partition 'debug'" in message
    assert "choose a partition with GPU nodes" in message


def test_check_capacity_named_partition_beats_default() -> None:
    check_capacity(spec_for(gpus=1, slurm_partition="gpu"), CLUSTER)


def test_check_capacity_too_many_gpus_per_node_suggests_nodes() -> None:
    with pytest.raises(ResourceError) as excinfo:
        check_capacity(spec_for(gpus=8, slurm_partition="gpu"), CLUSTER)
    message = refused(excinfo, "gpus")
    assert "puts 8 GPUs on each of 1 node(s)" in message
    assert "partition 'gpu' have at most 4" in message
    assert "nodes=2 for gpus=8" in message


@pytest.mark.parametrize(
    ("gpus", "available"),
    [
        pytest.param(8, 4, id="8-on-4"),
        pytest.param(6, 4, id="6-on-4"),
        pytest.param(16, 8, id="16-on-8"),
        pytest.param(10, 4, id="10-on-4"),
        pytest.param(5, 4, id="5-on-4"),
    ],
)
def test_check_capacity_suggestion_can_be_followed(gpus: int, available: int) -> None:
    cluster = ClusterInfo({"gpu": available}, default_partition="gpu")
    with pytest.raises(ResourceError) as excinfo:
        check_capacity(spec_for(gpus=gpus), cluster)
    suggested = re.search(r"nodes=(\d+)", str(excinfo.value).split("HINT:", 1)[1])
    assert suggested, str(excinfo.value)
    followed = spec_for(gpus=gpus, nodes=int(suggested.group(1)))  # the HINT, taken at its word
    check_capacity(followed, cluster)


@pytest.mark.parametrize(
    "cluster", [ClusterInfo({"debug": 0, "gpu": 4}), ClusterInfo({})], ids=["partitions", "no-partitions"])
def test_check_capacity_leaves_a_step_without_partition_to_the_sites_routing(cluster: ClusterInfo) -> None:
    # the official plugin submits without --partition there, and so does slurm-gpu (the executor
    # says so once): a job_submit plugin may route it
    check_capacity(spec_for(gpus=8), cluster)


def test_check_capacity_takes_a_list_of_partitions() -> None:
    cluster = ClusterInfo({"debug": 0, "gpu": 4, "big": 8})
    check_capacity(spec_for(gpus=8, slurm_partition="gpu, big"), cluster)  # fits in one of them
    with pytest.raises(ResourceError) as excinfo:
        check_capacity(spec_for(gpus=8, slurm_partition="gpu,debug"), cluster)
    assert "partitions 'gpu,debug' have at most 4" in refused(excinfo, "gpus")
    with pytest.raises(ResourceError) as excinfo:
        check_capacity(spec_for(gpus=1, slurm_partition="gpu,gpux"), cluster)
    assert "no partition 'gpux'" in refused(excinfo, "slurm_partition")


SIZED = ClusterInfo({"debug": 0, "gpu": 4}, "debug", sizes={"debug": (4, 4000), "gpu": (32, 256000)})


@pytest.mark.parametrize(
    ("resources", "threads", "resource", "fragment"),
    [
        ({}, 20, "cpus_per_task / threads", "asks for 20 CPUs on one node, but the nodes of partition 'debug' have at most 4"),
        ({"tasks_per_node": 3, "cpus_per_task": 2}, 1, "cpus_per_task", "asks for 6 CPUs"),
        ({"mem_mb": 8000}, 1, "mem_mb", "asks for 8000 MB on one node"),
        ({"mem_mb_per_cpu": 2000}, 3, "mem_mb_per_cpu", "asks for 6000 MB"),
        ({"gpus": 4, "cpus_per_task": 9, "slurm_partition": "gpu"}, 1, "cpus_per_task", "asks for 36 CPUs"),
    ],
)
def test_check_capacity_refuses_what_no_node_can_hold(resources: dict[str, Any], threads: int, resource: str,
                                                       fragment: str) -> None:
    with pytest.raises(ResourceError) as excinfo:
        check_capacity(build_spec(RULE, resources, threads), SIZED)
    assert fragment in refused(excinfo, resource)


def test_check_capacity_cannot_judge_unknown_sizes() -> None:
    check_capacity(build_spec(RULE, {"mem_mb": 10**7}, 99), ClusterInfo({"debug": 0}, "debug", sizes={"debug": (None, None)}))
    check_capacity(build_spec(RULE, {"tasks": 64}, 1), SIZED)  # tasks Slurm spreads: one per node is enough


# ---------------------------------------------------------------- requeue off and the site's set-up

def test_requeue_off_by_resource_drops_the_signal_and_says_why():
    spec = build_spec("train", {"gpus": 2, "runtime": 60, "requeue": 0})
    assert not spec.requeue and spec.signal is None and spec.signal_lead_s is None
    assert spec.requeue_off_by == "resource requeue=0"
    assert spec.resumable  # still checkpoints: only restarts from outside are off


def test_requeue_off_by_setting_and_a_rule_that_turns_it_back_on():
    off = build_spec("train", {"gpus": 2, "runtime": 60}, no_requeue=True)
    assert not off.requeue and off.requeue_off_by == "setting --slurm-gpu-no-requeue"
    on = build_spec("train", {"gpus": 2, "runtime": 60, "requeue": "yes"}, no_requeue=True)
    assert on.requeue and on.signal == "USR1"


@pytest.mark.parametrize("value", ["maybe", 2, "01x"])
def test_a_requeue_resource_that_is_not_yes_or_no_is_refused(value):
    with pytest.raises(ResourceError, match=r"rule 'train': resource 'requeue' .*requeue=0 or requeue=1"):
        build_spec("train", {"gpus": 1, "requeue": value})


def test_site_set_up_lines_come_before_the_rules_own():
    spec = build_spec("train", {"gpus": 1, "slurm_setup": "source env/bin/activate\n"}, setup="module load cuda")
    assert spec.setup == "module load cuda\nsource env/bin/activate"
    assert build_spec("train", {"gpus": 1}).setup is None


def test_set_up_lines_with_a_carriage_return_are_refused():
    with pytest.raises(ResourceError, match="slurm_setup"):
        build_spec("train", {"gpus": 1, "slurm_setup": "module load a\rrm -rf x"})


# ---------------------------------------------------------------- an elastic step (min_nodes)

def test_an_elastic_step_asks_slurm_for_a_node_range_at_its_full_size() -> None:
    spec = build_spec(RULE, {"nodes": 4, "min_nodes": 2, "gpus": 8})
    assert (spec.nodes, spec.min_nodes, spec.node_range, spec.gpus, spec.gpus_per_node) == (4, 2, "2-4", 8, 2)
    assert spec.layout.startswith("2-4 node(s) x 2 task(s)")


def test_min_nodes_equal_to_nodes_is_a_rigid_step() -> None:
    spec = build_spec(RULE, {"nodes": 2, "min_nodes": 2, "gpus": 4})
    assert (spec.min_nodes, spec.node_range) == (None, "2")
