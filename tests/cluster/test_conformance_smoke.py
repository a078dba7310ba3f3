"""A smoke subset of Snakemake's own test workflows under `--executor slurm-gpu` (the whole selection:
`make test-conformance`, tests/conformance/run.py). Snakemake's tests come from the sdist of the
installed Snakemake on PyPI, cached in .cache/conformance/; when it cannot be had the tests fail."""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("conformance_run", REPO / "tests" / "conformance" / "run.py")
conformance = importlib.util.module_from_spec(_spec)
sys.modules["conformance_run"] = conformance
_spec.loader.exec_module(conformance)

TIMEOUT_S = 150


@functools.lru_cache(maxsize=1)
def _snakemake_tests() -> tuple[Path, dict]:
    tests_dir = conformance.fetch_tests()   # downloads once, then reuses .cache/conformance/
    return tests_dir, conformance.parse_tests(tests_dir)


@pytest.mark.parametrize("name", conformance.SMOKE)
def test_snakemake_workflow(cluster, name):
    try:
        tests_dir, invocations = _snakemake_tests()
    except conformance.SdistUnavailable as e:   # a failure, not a skip: CI has PyPI
        pytest.fail(f"Snakemake's test workflows (the snakemake sdist on PyPI) could not be had: {e}")
    inv = invocations.get(name)
    assert inv is not None, f"{name} is not a test in {tests_dir / 'tests.py'}: update SMOKE in tests/conformance/run.py"
    assert not inv.skip, f"{name} cannot be replayed: {inv.skip}"
    result = conformance.run_one(inv, tests_dir, "slurm-gpu", TIMEOUT_S,
                                 log_dir=conformance.CACHE / "logs" / "smoke")
    tail = "\n".join(Path(result.log).read_text().splitlines()[-40:]) if result.log else ""
    assert result.status == "pass", f"{name} under slurm-gpu: {result.reason}\n{tail}"
