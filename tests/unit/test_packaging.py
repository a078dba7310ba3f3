"""The plugin installs as Snakemake plugins do: `python -m build` makes an sdist and a wheel from a copy of
the checkout, the archives hold what a user needs (and not the tests, the local cluster or a venv), and the
wheel, installed into a fresh venv, is what Snakemake discovers (by the module prefix
`snakemake_executor_plugin_`), what `slurm-gpu` runs, and what imports without torch.

No network: the build runs with --no-isolation (setuptools from this venv), the wheel is installed with
--no-index --no-deps, and the fresh venv borrows this venv's dependencies through a .pth file (a path line:
the .pth files over there, the checkout's editable install among them, are not processed)."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import textwrap
import tomllib
import zipfile
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "snakemake_executor_plugin_slurm_gpu"
PACKAGE_SRC = ROOT / "executor" / PACKAGE
DIST_NAME = "snakemake-executor-plugin-slurm-gpu"
# Snakemake's plugin registry (pkgutil.iter_modules) takes executor plugins by this module-name prefix
PLUGIN_PREFIX = "snakemake_executor_plugin_"
# what the copy of the checkout leaves behind: development state and run outputs, never part of a build
# (anywhere in the tree; at the top of it; in an example workflow or the benchmarks)
NOT_COPIED = ("*.egg-info", "__pycache__", "*.pyc", ".snakemake", ".pytest_cache", ".hypothesis")
NOT_COPIED_AT_ROOT = (".git", ".venv*", ".cache", "build", "dist")
NOT_COPIED_IN_RUNS = ("results", "data")
# top-level directories of the checkout that no archive may carry
DEV_ONLY = ("tests", "benchmarks", "cluster", "workflows", ".ci", ".venv", ".venv-official", ".git", "build")


def _run(argv: list[str], *, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
    assert result.returncode == 0, (
        f"{argv!r} exited {result.returncode}\n--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}")
    return result


def _package_modules() -> set[str]:
    """Every module of the package in the checkout, as a path relative to executor/."""
    return {p.relative_to(PACKAGE_SRC.parent).as_posix() for p in PACKAGE_SRC.rglob("*.py")
            if "__pycache__" not in p.parts}


def _not_copied(directory: str, names: list[str]) -> set[str]:
    where = Path(directory).resolve()
    patterns = NOT_COPIED
    if where == ROOT:
        patterns += NOT_COPIED_AT_ROOT
    elif where.parent == ROOT / "workflows" or where == ROOT / "benchmarks":
        patterns += NOT_COPIED_IN_RUNS
    return set(shutil.ignore_patterns(*patterns)(directory, names))


@dataclasses.dataclass(frozen=True)
class Dists:
    sdist: Path
    wheel: Path


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Dists:
    """sdist, then the wheel built from that sdist (what `python -m build` does without --sdist/--wheel),
    from a copy of the checkout: the build writes egg-info and build/ into its source tree, and a stale
    egg-info SOURCES.txt of the checkout would leak into the sdist."""
    if importlib.util.find_spec("build") is None:
        pytest.fail("the `build` package is missing: pip install build (it is in the [test] extra)")
    work = tmp_path_factory.mktemp("dist")
    src = work / "src"
    shutil.copytree(ROOT, src, ignore=_not_copied, symlinks=True)
    out = work / "out"
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src)], timeout=120,
         cwd=work)
    sdists, wheels = sorted(out.glob("*.tar.gz")), sorted(out.glob("*.whl"))
    assert len(sdists) == 1 and len(wheels) == 1, sorted(p.name for p in out.iterdir())
    return Dists(sdists[0], wheels[0])


def _version() -> str:
    namespace: dict[str, object] = {}
    exec((PACKAGE_SRC / "_version.py").read_text(), namespace)
    version = namespace["__version__"]
    assert isinstance(version, str)
    return version


def test_version_is_written_in_one_place() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    attr = project["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == f"{PACKAGE}._version.__version__"
    assert re.fullmatch(r"\d+\.\d+\.\d+(\S*)", _version())


def test_sdist_holds_what_a_user_needs(dists: Dists) -> None:
    with tarfile.open(dists.sdist) as archive:
        names = archive.getnames()
    top = f"{PACKAGE}-{_version()}/"
    assert all(n == top.rstrip("/") or n.startswith(top) for n in names), names
    inside = {n[len(top):] for n in names if n.startswith(top)}
    for needed in ("pyproject.toml", "README.md", "PKG-INFO", "docs/intro.md", "docs/further.md",
                   "profiles/slurm-gpu/config.v8+.yaml"):
        assert needed in inside, needed
    missing = {f"executor/{m}" for m in _package_modules()} - inside
    assert not missing, f"package modules missing from the sdist: {sorted(missing)}"
    for license_file in ROOT.glob("LICEN[CS]E*"):
        assert license_file.name in inside
    leaked = sorted(n for n in inside if n.split("/")[0] in DEV_ONLY or "__pycache__" in n or n.endswith(".pyc"))
    assert not leaked, f"development files in the sdist: {leaked[:20]}"
    assert dists.sdist.stat().st_size < 2_000_000


def test_wheel_holds_the_package_its_runtime_and_the_command(dists: Dists) -> None:
    with zipfile.ZipFile(dists.wheel) as archive:
        names = set(archive.namelist())
        info = f"{PACKAGE}-{_version()}.dist-info"
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
        metadata = archive.read(f"{info}/METADATA").decode()
    missing = _package_modules() - names
    assert not missing, f"package modules missing from the wheel: {sorted(missing)}"
    assert f"{PACKAGE}/runtime/__init__.py" in names
    # one top-level module, named so that Snakemake's registry finds it: the plugin "slurm-gpu"
    tops = {n.split("/")[0] for n in names} - {info}
    assert tops == {PACKAGE} and PACKAGE.startswith(PLUGIN_PREFIX)
    assert PACKAGE.removeprefix(PLUGIN_PREFIX).replace("_", "-") == "slurm-gpu"
    assert re.search(r"(?m)^\[console_scripts\]\s*\nslurm-gpu = snakemake_executor_plugin_slurm_gpu\.cli:main$",
                     entry_points), entry_points
    assert f"\nName: {DIST_NAME}\n" in metadata and f"\nVersion: {_version()}\n" in metadata
    assert "\nLicense-Expression: MIT\n" in metadata
    assert re.search(r"(?m)^Requires-Dist: snakemake<10,>=", metadata)


@pytest.fixture(scope="module")
def venv(dists: Dists, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv with the wheel installed (not the checkout), this venv's packages behind it."""
    home = tmp_path_factory.mktemp("venv")
    env_dir = home / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)])
    python = env_dir / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
          "--no-compile", "--disable-pip-version-check", str(dists.wheel)], timeout=120)
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     env=_clean_env(env_dir)).stdout.strip())
    ours = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (site / "_main_venv_dependencies.pth").write_text("".join(f"{p}\n" for p in ours))
    yield env_dir


def _clean_env(env_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(env_dir)
    return env


def _in_venv(venv: Path, argv: list[str], tmp_path: Path) -> str:
    """Run in the fresh venv from a directory outside the checkout; stdout + stderr."""
    assert not tmp_path.resolve().is_relative_to(ROOT)
    result = _run(argv, cwd=tmp_path, env=_clean_env(venv))
    return result.stdout + result.stderr


def test_the_installed_wheel_imports_without_torch(venv: Path, tmp_path: Path) -> None:
    probe = textwrap.dedent(f"""
        import sys
        import {PACKAGE} as p
        print("FILE", p.__file__)
        print("BARE", "torch" in sys.modules, "snakemake" in sys.modules)
        import {PACKAGE}.runtime
        print("RUNTIME", "torch" in sys.modules)
        print("PLUGIN", p.Executor, p.ExecutorSettings)
        print("AFTER", "torch" in sys.modules)
    """)
    out = _in_venv(venv, [str(venv / "bin" / "python"), "-c", probe], tmp_path)
    lines = dict(line.split(" ", 1) for line in out.splitlines() if line.split(" ", 1)[0].isupper())
    module_file = Path(lines["FILE"]).resolve()
    assert module_file.is_relative_to(venv.resolve()) and not module_file.is_relative_to(ROOT), module_file
    assert lines["BARE"] == "False False", "importing the plugin must not import torch or snakemake"
    assert lines["RUNTIME"] == "False", "importing runtime must not import torch"
    assert "Executor" in lines["PLUGIN"] and "ExecutorSettings" in lines["PLUGIN"]
    assert lines["AFTER"] == "False", "the executor must not import torch"


def test_snakemake_discovers_the_installed_plugin(venv: Path, tmp_path: Path) -> None:
    from snakemake_executor_plugin_slurm_gpu.settings import ExecutorSettings

    python = str(venv / "bin" / "python")
    probe = textwrap.dedent(f"""
        import sys
        from snakemake_interface_executor_plugins.registry import ExecutorPluginRegistry
        plugin = ExecutorPluginRegistry().get_plugin("slurm-gpu")
        print(plugin.settings_cls.__name__)
        print(sys.modules["{PACKAGE}"].__file__)
    """)
    settings_name, module_file = _in_venv(venv, [python, "-c", probe], tmp_path).splitlines()[-2:]
    assert settings_name == "ExecutorSettings"
    assert Path(module_file).resolve().is_relative_to(venv.resolve()), module_file
    helped = _in_venv(venv, [python, "-m", "snakemake", "--help"], tmp_path)
    flags = {f"--slurm-gpu-{f.name.replace('_', '-')}" for f in dataclasses.fields(ExecutorSettings)}
    assert flags and all(flag in helped for flag in flags), sorted(f for f in flags if f not in helped)
    executors = re.search(r"--executor \{([^}]*)\}", helped)
    assert executors and "slurm-gpu" in executors.group(1).split(","), "slurm-gpu is not among --executor's choices"


def test_the_slurm_gpu_command_is_installed(venv: Path, tmp_path: Path) -> None:
    script = venv / "bin" / "slurm-gpu"
    assert script.is_file() and script.read_text().startswith(f"#!{venv / 'bin' / 'python'}")
    helped = _in_venv(venv, [str(script), "--help"], tmp_path)
    for command in ("status", "timeline", "explain"):
        assert command in helped


def test_every_setting_is_documented_in_the_readme_and_the_catalog_page() -> None:
    # the catalog page (docs/further.md) and the README are written by hand: a new setting must reach both
    from snakemake_executor_plugin_slurm_gpu.settings import ExecutorSettings

    readme = (ROOT / "README.md").read_text()
    further = (ROOT / "docs" / "further.md").read_text()
    for name in (f.name.replace("_", "-") for f in dataclasses.fields(ExecutorSettings)):
        assert f"`--slurm-gpu-{name}`" in further, name
        assert f"`{name}`" in readme, name
