"""Suite-wide: count the tests that ran against the real cluster; a run that selected them but ran
none has proved nothing about Slurm, so it fails."""

import pytest

_cluster_outcomes: list[str] = []


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "/tests/cluster/" in str(item.fspath):
            item.add_marker(pytest.mark.cluster)


def pytest_runtest_logreport(report):
    if report.when == "call" and "cluster" in report.keywords:
        _cluster_outcomes.append(report.outcome)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    ran = sum(1 for o in _cluster_outcomes if o in ("passed", "failed"))
    terminalreporter.write_line(f"real-cluster tests run: {ran} "
                                f"({_cluster_outcomes.count('passed')} passed)")


def pytest_sessionfinish(session, exitstatus):
    collected_cluster = any("cluster" in item.keywords for item in session.items)
    ran = sum(1 for o in _cluster_outcomes if o in ("passed", "failed"))
    if collected_cluster and ran == 0 and exitstatus == 0:
        session.exitstatus = 1
