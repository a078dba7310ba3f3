"""Nobody else's code runs as the user, on the real cluster through `snakemake --executor slurm-gpu`:
checkpoints that someone else could have written are never resumed from (nor silently replaced by a
fresh start), the executor's files are private whatever the umask, secrets stay in the environment,
and fuzzed wildcards and slurm_extra values reach the job intact without anything being executed."""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import stat
from pathlib import Path

from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from conftest import copy_workflow, slurm, snakemake, write_workflow

CKPT = Path(".snakemake/slurm-gpu/checkpoints/train/all")
LOGS = Path(".snakemake/slurm-gpu/logs/train/all")


def train_jobs(workdir: Path) -> list[str]:
    return sorted((p.stem for p in (workdir / LOGS).glob("*.log")), key=int)


def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    """Name -> (size, mtime) of everything in a checkpoint directory: the evidence must not change."""
    return {p.name: (p.lstat().st_size, p.lstat().st_mtime_ns) for p in directory.iterdir()}


def test_untrusted_checkpoints_stop_the_resume_with_the_named_error_and_are_left_as_evidence(cluster, tmp_path):
    workdir = copy_workflow("train-eval", tmp_path)
    config = ["--config", "max_steps=100", "train_nodes=1", "train_gpus=2"]
    first = snakemake(workdir, *config, env={"TRAIN_FAIL_AT_STEP": "70"})
    assert first.returncode != 0 and "injected failure at global_step=70" in first.output, first.output
    step_dir = workdir / CKPT
    assert (step_dir / "step-000000050.ckpt").is_file()
    assert len(train_jobs(workdir)) == 1

    # 1. a group-writable checkpoint directory: refused before anything is submitted
    step_dir.chmod(0o770)
    before = snapshot(step_dir)
    refused = snakemake(workdir, *config)
    assert refused.returncode != 0
    assert "slurm-gpu: step train/all was not submitted" in refused.output, refused.output
    assert f"{step_dir} is writable by its group (mode 0770)" in refused.output
    assert f"HINT: if you trust its contents, run `chmod go-w {step_dir}`" in refused.output
    assert len(train_jobs(workdir)) == 1, "a refused step must not reach Slurm"
    assert snapshot(step_dir) == before and stat.S_IMODE(step_dir.stat().st_mode) == 0o770

    # 2. a checkpoint replaced by a symbolic link to a file outside the step's directory
    step_dir.chmod(0o700)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    checkpoint = step_dir / "step-000000050.ckpt"
    shutil.move(checkpoint, elsewhere / checkpoint.name)
    checkpoint.symlink_to(elsewhere / checkpoint.name)
    refused = snakemake(workdir, *config)
    assert refused.returncode != 0
    assert (f"{checkpoint} is a symbolic link to {elsewhere / checkpoint.name}, outside the step's checkpoint "
            f"directory") in refused.output, refused.output
    assert len(train_jobs(workdir)) == 1
    assert checkpoint.is_symlink()

    # 3. the user puts the real file back: the step resumes from it (the checks refuse only what they should)
    checkpoint.unlink()
    shutil.move(elsewhere / checkpoint.name, checkpoint)
    resumed = snakemake(workdir, *config)
    assert resumed.returncode == 0, resumed.output
    last = (workdir / LOGS / f"{train_jobs(workdir)[-1]}.log").read_text(errors="replace")
    assert re.findall(r"resumed_from global_step=(\d+)", last) == ["50"]
    assert re.findall(r"training_done global_step=(\d+)", last) == ["100"]


SECRET = "sg-test-token-6f1d0c3a9e"

SECRET_SNAKEFILE = '''
envvars: "SG_TEST_TOKEN"

rule all:
    input: "out/cpu.txt", "out/gpu.txt"

rule cpu:
    output: "out/cpu.txt"
    resources: runtime=5
    shell: "printf '%s' \\"$SG_TEST_TOKEN\\" | sha256sum | cut -c1-64 > {output}"

rule gpu:
    output: "out/gpu.txt"
    resources: gpus=1, runtime=5
    shell: "srun bash -c 'printf %s \\"$SG_TEST_TOKEN\\" | sha256sum | cut -c1-64' > {output}"
'''


def test_executor_files_are_private_whatever_the_umask_and_hold_no_secret(cluster, tmp_path):
    workdir = write_workflow(tmp_path / "wf", SECRET_SNAKEFILE)
    old = os.umask(0)  # the loosest umask a user can have: nothing of ours may follow it
    try:
        run = snakemake(workdir, env={"SG_TEST_TOKEN": SECRET})
    finally:
        os.umask(old)
    assert run.returncode == 0, run.output
    digest = hashlib.sha256(SECRET.encode()).hexdigest()
    # the jobs got the token, through Slurm's --export, on the batch host and in srun's tasks
    assert (workdir / "out/cpu.txt").read_text().strip() == digest
    assert (workdir / "out/gpu.txt").read_text().strip() == digest
    leaked = [p for p in workdir.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert leaked == [], f"the token was written to {leaked}"

    # Snakemake made .snakemake under umask 0 (0777); what holds our files lost its write bits for others
    assert stat.S_IMODE((workdir / ".snakemake").stat().st_mode) & 0o022 == 0
    assert "was writable by group or others (mode 0777); removed those write bits" in run.output
    state = workdir / ".snakemake/slurm-gpu"
    dirs = [state, *(p for p in state.rglob("*") if p.is_dir())]
    assert {str(d.relative_to(workdir)): oct(stat.S_IMODE(d.stat().st_mode)) for d in dirs
            if stat.S_IMODE(d.stat().st_mode) != 0o700} == {}
    scripts = [p for p in (state / "scripts").rglob("*") if p.is_file()]
    assert len(scripts) == 2
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in scripts
            if stat.S_IMODE(p.stat().st_mode) != 0o600} == {}
    assert (state / "checkpoints/gpu/all").is_dir()
    # each script file is the record of exactly what sbatch read from its standard input
    for rule in ("cpu", "gpu"):
        (script,) = (state / "scripts" / rule / "all").glob("*.sh")
        (job,) = [p.stem for p in (state / "logs" / rule / "all").glob("*.log")]
        assert slurm("scontrol", "write", "batch_script", job, "-") == script.read_text()


# ---------------------------------------------------------------- fuzz

CANARY = "sg-canary-"
# shell syntax that would create a canary file if any hop ran the value through a shell
PAYLOADS = [f"$(touch {CANARY}1)", f"`touch {CANARY}2`", f";touch {CANARY}3;", f"|touch {CANARY}4",
            f"&&touch {CANARY}5", f"'$(touch {CANARY}6)'", f'"$(touch {CANARY}7)"', f"$({CANARY}8)",
            f"\\$(touch {CANARY}9)", f"${{IFS}}touch${{IFS}}{CANARY}0", "*", "~", "%j%x", ""]
# wildcard values become file names: no '/' (a directory), no braces (Snakemake's own patterns)
WILDCARD_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="/{}\n\r\x00",
                                      exclude_categories=("Cs", "Cc")), max_size=12)
# an #SBATCH value cannot hold a double quote or backslash: those are refused before submission
# (unit-tested); everything else must arrive as it was written
EXTRA_TEXT = st.text(st.characters(codec="utf-8", exclude_characters='"\\\n\r\x00',
                                   exclude_categories=("Cs", "Cc")), min_size=1, max_size=16)


@st.composite
def hostile(draw: st.DrawFn, text: st.SearchStrategy[str], renderable: bool = False) -> str:
    payloads = [p for p in PAYLOADS if not (renderable and ('"' in p or "\\" in p))]
    value = draw(text) + draw(st.sampled_from(payloads)) + draw(text)
    return value if value.strip() and not value.startswith("-") else "v" + value


def carried_by_target_jobs(value: str) -> bool:
    """Values Snakemake's --target-jobs cannot carry are refused before submission (unit-tested,
    and below); the fuzz covers all the others."""
    return "," not in value and value == value.strip("'\"")


FUZZ_SNAKEFILE = '''
import json
VALUES = json.load(open("values.json"))

rule all:
    input: [f"out/{{i}}.txt" for i in range(len(VALUES))]

rule echo:
    output: "out/{{i}}.txt"
    params: value=lambda wc: VALUES[int(wc.i)]
    resources: runtime=5, slurm_extra={extra!r}
    shell: "printf '%s' {{params.value:q}} > {{output:q}}"

rule named:
    output: "named/{{name}}.txt"
    resources: runtime=5
    shell: "printf '%s' {{wildcards.name:q}} > {{output:q}}"
'''


def mail_user(job_id: str) -> str:
    """What Slurm stored for --mail-user (shown while the job is within MinJobAge)."""
    match = re.search(r"MailUser=(.*) MailType=", slurm("scontrol", "show", "job", "-o", job_id))
    assert match, f"scontrol shows no MailUser for job {job_id}"
    return match.group(1)


@settings(max_examples=4, derandomize=True, deadline=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=list(HealthCheck))
@given(names=st.lists(hostile(WILDCARD_TEXT).filter(carried_by_target_jobs), min_size=1, max_size=2, unique=True),
       mail=hostile(EXTRA_TEXT, renderable=True))
@example(names=["x$(touch sg-canary-1)`touch sg-canary-2`;touch sg-canary-3;'q\"y", " lead and trail  "],
         mail=" a'b;$(touch sg-canary-4)|`touch sg-canary-5` #c ")
def test_fuzzed_wildcards_and_slurm_extra_reach_the_job_intact_and_nothing_runs(cluster, tmp_path_factory,
                                                                                names, mail):
    base = tmp_path_factory.mktemp("fuzz")
    extra = f"--mail-type=INVALID_DEPEND --mail-user={shlex.quote(mail)}"
    workdir = write_workflow(base / "wf", FUZZ_SNAKEFILE.format(extra=extra))
    (workdir / "values.json").write_text(__import__("json").dumps(names))
    targets = ["all", *(f"named/{n}.txt" for n in names)]
    run = snakemake(workdir, *targets)
    assert run.returncode == 0, run.output
    for i, name in enumerate(names):
        assert (workdir / f"out/{i}.txt").read_text() == name           # through params and the job
        assert (workdir / "named" / f"{name}.txt").read_text() == name  # through a wildcard
    created = sorted(str(p) for p in base.rglob(f"{CANARY}*") if re.fullmatch(rf"{CANARY}\d", p.name))
    assert created == [], f"something ran a value through a shell: {created}"
    echo_jobs = sorted((p.stem for p in (workdir / ".snakemake/slurm-gpu/logs/echo").rglob("*.log")), key=int)
    assert len(echo_jobs) == len(names)
    assert {mail_user(job) for job in echo_jobs} == {mail}


COMMA_SNAKEFILE = '''
rule all:
    input: "out/a.txt", "out/b,c.txt"

rule echo:
    output: "out/{name}.txt"
    resources: runtime=5
    shell: "printf '%s' {wildcards.name:q} > {output:q}"
'''


def test_a_wildcard_value_target_jobs_cannot_carry_is_refused_before_anything_is_submitted(cluster, tmp_path):
    workdir = write_workflow(tmp_path / "wf", COMMA_SNAKEFILE)
    run = snakemake(workdir)
    assert run.returncode != 0
    assert "nothing was submitted" in run.output, run.output
    assert "rule 'echo': wildcard 'name' is 'b,c', which contains a comma" in run.output
    assert "HINT:" in run.output
    assert not (workdir / ".snakemake/slurm-gpu/scripts").exists()
