"""FakeSlurm: a `slurm.run` runner with scripted answers. No unit test may run a real Slurm command."""

from __future__ import annotations

from collections import deque
from typing import Sequence

from snakemake_executor_plugin_slurm_gpu import slurm
from snakemake_executor_plugin_slurm_gpu.slurm import Completed


class FakeSlurm:
    """A `slurm.run` runner with scripted answers, like submitit's fake: an argv nobody scripted is a
    test failure, not a silent empty answer."""

    def __init__(self) -> None:
        self._answers: dict[tuple[str, ...], deque[Completed | BaseException]] = {}
        self.calls: list[tuple[list[str], float]] = []
        self.stdins: list[str | None] = []  # what each call got on its standard input

    def answer(self, argv: Sequence[str], stdout: str = "", stderr: str = "", returncode: int = 0,
               times: int = 1) -> None:
        """Script `times` identical answers for argv (in call order, after any already scripted)."""
        for _ in range(times):
            self._answers.setdefault(tuple(argv), deque()).append(Completed(returncode, stdout, stderr))

    def fail_with(self, argv: Sequence[str], error: BaseException) -> None:
        """Script the runner itself raising (timeout, missing binary) for argv."""
        self._answers.setdefault(tuple(argv), deque()).append(error)

    def __call__(self, argv: Sequence[str], timeout_s: float, stdin: str | None = None) -> Completed:
        self.calls.append((list(argv), timeout_s))
        self.stdins.append(stdin)
        queue = self._answers.get(tuple(argv))
        if not queue:
            raise AssertionError(f"FakeSlurm: unexpected Slurm call {list(argv)!r}; scripted: "
                                 f"{[list(a) for a, q in self._answers.items() if q]!r}")
        answer = queue.popleft()
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def run(self, argv: Sequence[str]) -> str:
        """The `run` callable StatusQuery takes: slurm.run with this fake as its runner."""
        return slurm.run(argv, timeout_s=30.0, runner=self)

    def argvs(self) -> list[list[str]]:
        return [argv for argv, _ in self.calls]

    def commands(self) -> list[str]:
        return [argv[0] for argv, _ in self.calls]
