"""Every path of a step: readable, stable across runs, unique per step, and never outside its own
directory whatever the wildcard values are."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from snakemake_executor_plugin_slurm_gpu.paths import StepPaths, safe_name, wildcards_name

SAFE_COMPONENT = re.compile(r"[A-Za-z0-9._+=-]+")
HASHED = re.compile(r"(?P<readable>.*)-(?P<digest>[0-9a-f]{12})")


# ---------------------------------------------------------------- safe_name

@pytest.mark.parametrize("text", ["train", "sample=a.1", "lr=1e-4+wd", "A_b-C", "...", "-x", "x" * 80])
def test_safe_name_keeps_safe_names(text: str) -> None:
    assert safe_name(text) == text


@pytest.mark.parametrize(
    ("text", "readable"),
    [
        ("a/b", "a_b"),
        ("a b", "a_b"),
        ("$(touch x)", "__touch_x_"),
        ("../../etc", "_.._etc"),  # leading dots stripped: no hidden or dot-dot names
        ("sample=ä", "sample=_"),
        ("", "x"),
        (".", "x"),
        ("..", "x"),
        ("/", "_"),
    ],
)
def test_safe_name_replaces_unsafe_text_and_appends_a_hash(text: str, readable: str) -> None:
    name = safe_name(text)
    match = HASHED.fullmatch(name)
    assert match, name
    assert match["readable"] == readable
    assert SAFE_COMPONENT.fullmatch(name)
    assert name not in ("", ".", "..")


def test_safe_name_is_stable_across_runs() -> None:
    # resubmissions and later runs must find the same checkpoint directory: the hash is part of it
    assert safe_name("a/b") == "a_b-c14cddc033f6"
    assert safe_name("..") == "x-5ec1f7e700f3"


def test_safe_name_distinct_inputs_that_clean_alike_stay_distinct() -> None:
    texts = ["a/b", "a b", "a:b", "a\\b", "a_b"]
    names = [safe_name(t) for t in texts]
    assert len(set(names)) == len(texts)
    assert {HASHED.fullmatch(n)["readable"] for n in names[:-1]} == {"a_b"}  # type: ignore[index]
    assert names[-1] == "a_b"  # the safe one is left as it is


@pytest.mark.parametrize("length", [81, 200, 5000])
def test_safe_name_truncates_long_names(length: int) -> None:
    name = safe_name("x" * length)
    assert len(name) <= 80 + 1 + 12
    assert name.startswith("x" * 80)
    assert HASHED.fullmatch(name)
    assert name != safe_name("x" * (length + 1))


def test_safe_name_never_ends_in_a_dot_component() -> None:
    assert safe_name("." * 100).startswith("x-")


# ---------------------------------------------------------------- wildcards_name

@pytest.mark.parametrize(
    ("wildcards", "name"),
    [
        ({}, "all"),
        ({"sample": "a"}, "sample=a"),
        ({"sample": 3}, "sample=3"),
        # several plain wildcards stay readable
        ({"sample": "a", "rep": "1"}, "sample=a,rep=1"),
    ],
)
def test_wildcards_name(wildcards: dict[str, object], name: str) -> None:
    assert wildcards_name(wildcards) == name


def test_wildcards_name_depends_on_values() -> None:
    assert wildcards_name({"sample": "a"}) != wildcards_name({"sample": "b"})
    assert wildcards_name({"sample": "a/b"}) != wildcards_name({"sample": "a_b"})


def test_wildcards_name_is_unique_per_step() -> None:
    assert wildcards_name({"s": "a,b=c", "b": "d"}) != wildcards_name({"s": "a", "b": "c,b=d"})


# ---------------------------------------------------------------- StepPaths

def test_step_paths_locations(tmp_path: Path) -> None:
    paths = StepPaths.of(tmp_path, "train", {"sample": "a"})
    state = tmp_path / ".snakemake" / "slurm-gpu"
    assert paths.state_dir == state
    assert paths.key == "train/sample=a"
    assert paths.log_dir == state / "logs" / "train" / "sample=a"
    assert paths.log_file("123") == state / "logs" / "train" / "sample=a" / "123.log"
    assert paths.log_pattern == state / "logs" / "train" / "sample=a" / "%j.log"
    assert paths.script_dir == state / "scripts" / "train" / "sample=a"
    assert paths.checkpoint_dir == state / "checkpoints" / "train" / "sample=a"


def test_step_paths_without_wildcards(tmp_path: Path) -> None:
    paths = StepPaths.of(tmp_path, "prepare", {})
    assert paths.key == "prepare/all"
    assert paths.log_dir.name == "all"


def test_step_paths_root_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    paths = StepPaths.of(Path("wf"), "train", {})
    assert paths.root == tmp_path / "wf"
    assert paths.log_dir.is_absolute()


def test_checkpoint_root_absolute(tmp_path: Path) -> None:
    paths = StepPaths.of(tmp_path / "wf", "train", {"sample": "a"}, checkpoint_root=Path("/scratch/ckpt"))
    assert paths.checkpoint_dir == Path("/scratch/ckpt/train/sample=a")


def test_checkpoint_root_relative_is_under_root(tmp_path: Path) -> None:
    paths = StepPaths.of(tmp_path, "train", {"sample": "a"}, checkpoint_root=Path("ckpt"))
    assert paths.checkpoint_dir == tmp_path / "ckpt" / "train" / "sample=a"


def test_step_key_is_stable_and_distinct(tmp_path: Path) -> None:
    a1 = StepPaths.of(tmp_path, "train", {"sample": "a"})
    a2 = StepPaths.of(tmp_path, "train", {"sample": "a"})
    b = StepPaths.of(tmp_path, "train", {"sample": "b"})
    other_rule = StepPaths.of(tmp_path, "eval", {"sample": "a"})
    assert a1 == a2
    assert len({a1.key, b.key, other_rule.key}) == 3


HOSTILE = ["../../etc", "$(touch x)", "a/b", "..", ".", "", "/", "/etc/passwd", "~", "*", "x\n../y",
           "`id`", "a;b", "%j", "\x00", "..\\..", "name with spaces", "é/../"]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_wildcard_never_escapes_the_step_dir(tmp_path: Path, value: str) -> None:
    paths = StepPaths.of(tmp_path, "train", {"sample": value})
    state = (tmp_path / ".snakemake" / "slurm-gpu").resolve()
    for kind, directory in [("logs", paths.log_dir), ("scripts", paths.script_dir),
                            ("checkpoints", paths.checkpoint_dir)]:
        rule_dir = state / kind / "train"
        resolved = directory.resolve()
        assert resolved.parent == rule_dir, (value, resolved)
        assert SAFE_COMPONENT.fullmatch(resolved.name)
    assert paths.log_file("42").resolve().parent == paths.log_dir.resolve()


@pytest.mark.parametrize("rule", ["../evil", "a/b", ".."])
def test_hostile_rule_name_never_escapes(tmp_path: Path, rule: str) -> None:
    paths = StepPaths.of(tmp_path, rule, {})
    assert paths.log_dir.resolve().parent.parent == (tmp_path / ".snakemake" / "slurm-gpu" / "logs").resolve()


def test_hostile_wildcards_get_distinct_dirs(tmp_path: Path) -> None:
    dirs = {StepPaths.of(tmp_path, "train", {"sample": v}).checkpoint_dir for v in HOSTILE}
    assert len(dirs) == len(HOSTILE)
