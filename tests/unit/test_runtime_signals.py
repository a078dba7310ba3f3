"""runtime.signals with real signals sent to the test process: handlers only record what arrived,
the requeue signal is the one the batch script exports, and forked children (DataLoader workers)
that inherit the handlers do not act on them. Every test runs in `signal_sandbox`, which puts the
previous handlers back."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from typing import Callable

import pytest

from snakemake_executor_plugin_slurm_gpu.runtime import signals
from snakemake_executor_plugin_slurm_gpu.spec import check_signal

pytestmark = pytest.mark.usefixtures("signal_sandbox")


def deliver(signum: int, until: Callable[[], bool] | None = None, timeout_s: float = 2.0) -> None:
    """Send `signum` to this process and give the main thread the moment it needs to run the Python
    handler (the kernel may hand the signal to another thread, which only flags it)."""
    os.kill(os.getpid(), signum)
    deadline = time.monotonic() + timeout_s
    while until is not None and not until() and time.monotonic() < deadline:
        time.sleep(0.001)
    if until is None:
        time.sleep(0.01)


def requeued() -> bool:
    return signals.received().requeue


def terminated() -> bool:
    return signals.received().terminate


# ---------------------------------------------------------------- which signal

@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, signal.SIGUSR1),
        ({"SLURM_GPU_REQUEUE_SIGNAL": "USR1"}, signal.SIGUSR1),
        ({"SLURM_GPU_REQUEUE_SIGNAL": "USR2"}, signal.SIGUSR2),
        ({"SLURM_GPU_REQUEUE_SIGNAL": "SIGUSR2"}, signal.SIGUSR2),
        ({"SLURM_GPU_REQUEUE_SIGNAL": "usr2"}, signal.SIGUSR2),
        ({"SLURM_GPU_REQUEUE_SIGNAL": str(int(signal.SIGUSR2))}, signal.SIGUSR2),
        ({"SLURM_GPU_REQUEUE_SIGNAL": "HUP"}, signal.SIGHUP),
    ],
)
def test_requeue_signal_from_environment(environ: dict[str, str], expected: signal.Signals) -> None:
    assert signals.requeue_signal(environ) is expected


@pytest.mark.parametrize("name", ["USR1", "SIGUSR2", "usr2", "10", "12"])
def test_runtime_understands_every_form_the_batch_script_exports(name: str) -> None:
    # the batch script exports check_signal's form; the runtime must map it to the same signal
    exported = check_signal(name)
    expected = signal.Signals(int(exported)) if exported.isdigit() else signal.Signals[f"SIG{exported}"]
    assert signals.requeue_signal({"SLURM_GPU_REQUEUE_SIGNAL": exported}) is expected


def test_requeue_signal_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    assert signals.requeue_signal() is signal.SIGUSR1
    monkeypatch.setenv("SLURM_GPU_REQUEUE_SIGNAL", "USR2")
    assert signals.requeue_signal() is signal.SIGUSR2


# ---------------------------------------------------------------- recording

def test_install_sets_recording_handlers() -> None:
    signals.install()
    assert signal.getsignal(signal.SIGUSR1) is signals._record
    assert signal.getsignal(signal.SIGTERM) is signals._record


def test_requeue_signal_is_recorded_not_fatal() -> None:
    signals.install()
    deliver(signal.SIGUSR1, until=requeued)
    got = signals.received()
    assert (got.requeue, got.terminate, got.names) == (True, False, ["SIGUSR1"])


def test_sigterm_is_recorded_not_fatal() -> None:
    signals.install()
    deliver(signal.SIGTERM, until=terminated)
    got = signals.received()
    assert (got.requeue, got.terminate, got.names) == (False, True, ["SIGTERM"])


def test_both_in_order_and_repeated() -> None:
    signals.install()
    deliver(signal.SIGUSR1, until=requeued)
    deliver(signal.SIGTERM, until=terminated)
    deliver(signal.SIGUSR1, until=lambda: len(signals.received().names) == 3)
    got = signals.received()
    assert (got.requeue, got.terminate) == (True, True)
    assert got.names == ["SIGUSR1", "SIGTERM", "SIGUSR1"]


def test_the_exported_signal_is_the_one_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    def foreign(signum: int, frame: object) -> None:
        foreign.calls.append(signum)  # type: ignore[attr-defined]

    foreign.calls = []  # type: ignore[attr-defined]
    signal.signal(signal.SIGUSR1, foreign)  # someone else's USR1 handler stays theirs
    monkeypatch.setenv("SLURM_GPU_REQUEUE_SIGNAL", "USR2")
    signals.install()
    assert signal.getsignal(signal.SIGUSR1) is foreign
    deliver(signal.SIGUSR2, until=requeued)
    assert signals.received().names == ["SIGUSR2"]
    deliver(signal.SIGUSR1, until=lambda: bool(foreign.calls))  # type: ignore[attr-defined]
    assert foreign.calls == [signal.SIGUSR1]  # type: ignore[attr-defined]
    assert signals.received().names == ["SIGUSR2"]


def test_received_is_one_object_until_reset() -> None:
    signals.install()
    got = signals.received()
    deliver(signal.SIGUSR1, until=requeued)
    assert signals.received() is got
    assert got.requeue  # flags stay set: the callback may look only at the next step boundary
    signals.reset()
    assert signals.received() is got
    assert (got.requeue, got.terminate, got.names) == (False, False, [])


def test_reclaim_puts_the_recording_handlers_back_over_a_frameworks_own() -> None:
    signals.install()

    def frameworks(signum: int, frame: object) -> None:  # e.g. Lightning's SIGTERM handler
        frameworks.calls.append(signum)  # type: ignore[attr-defined]

    frameworks.calls = []  # type: ignore[attr-defined]
    signal.signal(signal.SIGTERM, frameworks)
    assert signals.reclaim() is True
    assert signal.getsignal(signal.SIGTERM) is signals._record
    assert signal.getsignal(signal.SIGUSR1) is signals._record
    deliver(signal.SIGTERM, until=terminated)
    assert frameworks.calls == []  # type: ignore[attr-defined]
    assert signals.reclaim() is False  # nothing left to put back


def test_reclaim_before_install_takes_nothing_over() -> None:
    before = signal.getsignal(signal.SIGTERM)
    assert signals.reclaim() is False
    assert signal.getsignal(signal.SIGTERM) is before


def test_install_is_idempotent() -> None:
    signals.install()
    deliver(signal.SIGUSR1, until=requeued)
    signals.install()  # e.g. the script's early install(), then Resumable()'s: no reset, no re-registration
    assert signals.received().requeue
    assert signal.getsignal(signal.SIGUSR1) is signals._record


def test_install_outside_the_main_thread_is_refused() -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            signals.install()
        except BaseException as e:  # noqa: BLE001 - reported to the main thread
            errors.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert len(errors) == 1 and isinstance(errors[0], ValueError)


def test_a_failed_install_can_be_retried() -> None:
    thread = threading.Thread(target=lambda: pytest.raises(ValueError, signals.install))
    thread.start()
    thread.join()
    signals.install()  # now from the main thread
    assert signal.getsignal(signal.SIGUSR1) is signals._record


def test_unknown_signal_name_in_environment_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_GPU_REQUEUE_SIGNAL", "NOPE")
    with pytest.raises((KeyError, ValueError)):
        signals.install()


def test_every_signal_the_spec_accepts_is_a_requeue_at_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    names = ["USR1", "USR2", "TERM", "INT", "HUP", "QUIT", "ALRM", "URG", "CONT"]
    accepted = []
    for name in names:
        try:
            accepted.append(check_signal(name))
        except ValueError:
            pass
    assert accepted, "check_signal refuses every named signal"
    failures = []
    for name in accepted:
        monkeypatch.setattr(signals, "_owner_pid", None)
        monkeypatch.setenv("SLURM_GPU_REQUEUE_SIGNAL", name)
        signals.reset()
        signals.install()
        deliver(signal.Signals[f"SIG{name}"], until=requeued, timeout_s=0.5)
        if not signals.received().requeue:
            failures.append(name)
    assert failures == []


# ---------------------------------------------------------------- forked children (DataLoader workers)

def _in_child(body: Callable[[], dict[str, object]]) -> dict[str, object]:
    """Run `body` in a forked child; what it returns comes back as JSON; the child's exit status
    must be 0 (a signal that killed it would show as a signal status)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 0
        try:
            os.close(read_end)
            os.write(write_end, json.dumps(body()).encode())
        except BaseException as e:  # noqa: BLE001
            os.write(write_end, json.dumps({"error": repr(e)}).encode())
            code = 3
        finally:
            os._exit(code)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status), f"the child died of signal {os.WTERMSIG(status) if os.WIFSIGNALED(status) else '?'}"
    result = json.loads(b"".join(chunks) or b"{}")
    assert os.WEXITSTATUS(status) == 0, result
    return result


def _send_to_self(*signums: int) -> Callable[[], dict[str, object]]:
    def body() -> dict[str, object]:
        for signum in signums:
            os.kill(os.getpid(), signum)
            time.sleep(0.05)
        got = signals.received()
        return {"requeue": got.requeue, "terminate": got.terminate, "names": got.names}
    return body


@pytest.mark.skipif(sys.platform == "win32", reason="needs fork")
def test_forked_child_ignores_the_requeue_signal() -> None:
    signals.install()
    child = _in_child(_send_to_self(signal.SIGUSR1))
    # the child survived (SIGUSR1's default action would kill it) and did not ask for a requeue
    assert child == {"requeue": False, "terminate": False, "names": []}
    # and nothing reached the parent's flags
    assert (signals.received().requeue, signals.received().names) == (False, [])


@pytest.mark.skipif(sys.platform == "win32", reason="needs fork")
def test_forked_child_still_dies_of_sigterm() -> None:
    # a DataLoader worker ignores the requeue signal but must stay killable
    signals.install()
    pid = os.fork()
    if pid == 0:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM
    assert signals.received().names == []


@pytest.mark.skipif(sys.platform == "win32", reason="needs fork")
def test_the_parent_still_records_after_a_fork() -> None:
    signals.install()
    _in_child(_send_to_self(signal.SIGUSR1))
    deliver(signal.SIGUSR1, until=requeued)
    assert signals.received().names == ["SIGUSR1"]


@pytest.mark.skipif(sys.platform == "win32", reason="needs fork")
def test_a_child_that_installs_itself_records_its_own_signals() -> None:
    # a forked process that is a rank in its own right calls install() and becomes the owner
    signals.install()

    def body() -> dict[str, object]:
        signals.install()
        return _send_to_self(signal.SIGUSR1)()

    assert _in_child(body) == {"requeue": True, "terminate": False, "names": ["SIGUSR1"]}
    assert signals.received().names == []


def test_at_exit_the_requeue_signal_is_ignored_not_fatal() -> None:
    # interpreter shutdown resets Python handlers to the default (terminate for SIGUSR1) but leaves
    # ignored signals ignored: a late time-limit warning must not kill a rank that already finished
    signals.install()
    signals._ignore_requeue_signal_at_exit()
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_IGN
    os.kill(os.getpid(), signal.SIGUSR1)  # would end pytest if it were fatal
    assert signals.received().names == []
