"""Wildcards are user data: shell syntax in them reaches the rule as literal text on every hop
(login-node submission, batch script, inner Snakemake)."""

from conftest import snakemake, write_workflow

HOSTILE = "x$(touch PWNED1)`touch PWNED2`;touch PWNED3;'q\"y"

SNAKEFILE = '''
NAMES = [{hostile!r}]

rule all:
    input: expand("out/{{name}}.txt", name=NAMES)

rule echo:
    output: "out/{{name}}.txt"
    resources: runtime=5
    shell: "printf '%s' {{wildcards.name:q}} > {{output:q}}"
'''


def test_hostile_wildcard_is_submitted_literally_and_nothing_runs(cluster, tmp_path):
    workdir = write_workflow(tmp_path / "wf", SNAKEFILE.format(hostile=HOSTILE))
    run = snakemake(workdir)
    assert run.returncode == 0, run.output
    assert (workdir / "out" / f"{HOSTILE}.txt").read_text() == HOSTILE
    created = sorted(p.name for p in tmp_path.rglob("PWNED*"))
    assert created == [], created
    # it ran as a real Slurm job, from a script whose directory name is made safe
    (step_dir,) = (workdir / ".snakemake/slurm-gpu/logs/echo").iterdir()
    assert "$" not in step_dir.name and "`" not in step_dir.name and ";" not in step_dir.name
    assert len(list(step_dir.glob("*.log"))) == 1
