"""The torch-free rendezvous: the roster check as a pure function, and real ranks (processes on
127.0.0.1 with the SLURM_* environment srun would give them) meeting, reducing and failing."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from snakemake_executor_plugin_slurm_gpu.runtime import rendezvous
from snakemake_executor_plugin_slurm_gpu.runtime.rendezvous import Expected, Member, _span, problems

EXPECTED = Expected(world_size=4, num_nodes=2, tasks_per_node=2, master="n1:15042", restart=0)


def world_of(nodes: int = 2, tasks: int = 2, **changes: object) -> list[Member]:
    return [Member(rank=n * tasks + t, local_rank=t, node=f"n{n + 1}", node_rank=n, world_size=nodes * tasks,
                   master="n1:15042", restart=0, pid=1000 + n * tasks + t, **changes)
            for n in range(nodes) for t in range(tasks)]


def test_the_submitted_world_has_no_problems() -> None:
    assert problems(world_of(), EXPECTED) == []


def test_a_missing_rank_is_named() -> None:
    assert problems(world_of()[:3], EXPECTED) == ["rank(s) 3 never came", "node n2 has local ranks 0, expected 0-1"]


def test_a_rank_that_came_twice_is_named() -> None:
    members = world_of()
    members[3] = replace(members[3], rank=2)
    found = problems(members, EXPECTED)
    assert "rank(s) 2 came more than once" in found
    assert "rank(s) 3 never came" in found


@pytest.mark.parametrize("field, value, message", [
    ("master", "n2:15042", "rank(s) 3 have master n2:15042, rank 0 has n1:15042"),
    ("restart", 1, "rank(s) 3 have restart 1, rank 0 has 0"),  # a rank of the previous run
    ("world_size", 8, "rank(s) 3 have world size 8, rank 0 has 4"),
])
def test_a_rank_that_disagrees_is_named(field: str, value: object, message: str) -> None:
    members = world_of()
    members[3] = replace(members[3], **{field: value})
    assert problems(members, EXPECTED) == [message]


def test_ranks_from_the_wrong_number_of_nodes() -> None:
    members = [replace(m, node="n1", node_rank=0, local_rank=m.rank) for m in world_of()]
    found = problems(members, EXPECTED)
    assert "ranks came from 1 node(s), the step has 2" in found
    assert "node n1 has local ranks 0-3, expected 0-1" in found


def test_two_nodes_with_one_node_rank() -> None:
    members = [replace(m, node_rank=0) for m in world_of()]
    assert problems(members, EXPECTED) == ["two nodes claim the same node rank"]


def test_spans_keep_a_big_world_readable() -> None:
    assert _span([7, 1, 2, 3, 9, 10]) == "1-3, 7, 9-10"
    assert _span(range(256)) == "0-255"
    assert _span([]) == ""


# ---------------------------------------------------------------- real ranks on this machine

RANK = textwrap.dedent("""
    import json, sys
    from snakemake_executor_plugin_slurm_gpu.runtime import rendezvous
    try:
        world = rendezvous.join(timeout_s=float(sys.argv[1]))
    except rendezvous.RendezvousError as e:
        print(json.dumps({"error": str(e)}))
        sys.exit(3)
    total = world.allreduce([world.rank, 1.0])
    biggest = world.allreduce([world.rank * 0.5], op="max")
    stop = world.any(world.rank == 2)
    quiet = world.any(False)
    print(json.dumps({"rank": world.rank, "roster": [m.rank for m in world.roster],
                      "nodes": sorted({m.node for m in world.roster}), "total": total,
                      "biggest": biggest, "stop": stop, "quiet": quiet}))
    world.close()
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_env(rank: int, nodes: int, tasks: int, port: int, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM")}
    env.update({
        "SLURM_JOB_ID": "42", "SLURM_NTASKS": str(nodes * tasks), "SLURM_NNODES": str(nodes),
        "SLURM_NTASKS_PER_NODE": str(tasks), "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank % tasks),
        "SLURM_NODEID": str(rank // tasks), "SLURMD_NODENAME": f"n{rank // tasks + 1}",
        "SLURM_GPU_NODES": str(nodes), "SLURM_GPU_TASKS_PER_NODE": str(tasks), "SLURM_GPU_STEP": "train/all",
        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "SLURM_GPU_EVENT_LOG": str(tmp_path / "events.jsonl"),
    })
    env.update(extra)
    return env


def start_ranks(tmp_path: Path, nodes: int, tasks: int, ranks: list[int] | None = None, timeout_s: float = 30,
                per_rank: dict[int, dict[str, str]] | None = None) -> list[subprocess.Popen[str]]:
    port = free_port()
    return [subprocess.Popen([sys.executable, "-c", RANK, str(timeout_s)], text=True, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE,
                             env=rank_env(r, nodes, tasks, port, tmp_path, **(per_rank or {}).get(r, {})))
            for r in (ranks if ranks is not None else range(nodes * tasks))]


def results(procs: list[subprocess.Popen[str]]) -> list[tuple[int, dict]]:
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=60)
        assert stdout.strip(), stderr
        out.append((p.returncode, json.loads(stdout.strip().splitlines()[-1])))
    return out


def test_ranks_meet_and_reduce_in_rank_order(tmp_path: Path) -> None:
    got = results(start_ranks(tmp_path, nodes=2, tasks=3))
    assert [code for code, _ in got] == [0] * 6
    for _, r in got:
        assert r["roster"] == list(range(6)) and r["nodes"] == ["n1", "n2"]
        assert r["total"] == [15.0, 6.0] and r["biggest"] == [2.5]
        assert r["stop"] is True and r["quiet"] is False  # rank 2's flag reaches everyone
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert sorted(e["rank"] for e in events if e["event"] == "rank_started") == list(range(6))
    assert sorted(e["rank"] for e in events if e["event"] == "rank_ready") == list(range(6))


def test_a_rank_that_never_comes_times_out_with_its_number(tmp_path: Path) -> None:
    got = results(start_ranks(tmp_path, nodes=2, tasks=2, ranks=[0, 1, 2], timeout_s=2))
    code, rank0 = got[0]
    assert code == 3
    assert "rank(s) 3 did not reach 127.0.0.1:" in rank0["error"] and "3 of 4 came" in rank0["error"]
    assert all(code == 3 for code, _ in got)  # the others are told, or time out themselves


def test_a_rank_from_another_run_is_refused_everywhere(tmp_path: Path) -> None:
    got = results(start_ranks(tmp_path, nodes=1, tasks=3, per_rank={2: {"SLURM_RESTART_COUNT": "1"}}))
    assert [code for code, _ in got] == [3, 3, 3]
    for _, r in got:
        assert "rank(s) 2 have restart 1, rank 0 has 0" in r["error"]


def test_a_master_nobody_listens_at(tmp_path: Path) -> None:
    (proc,) = start_ranks(tmp_path, nodes=1, tasks=2, ranks=[1], timeout_s=1)
    ((code, r),) = results([proc])
    assert code == 3 and "rank 1 on n1 could not reach the master 127.0.0.1:" in r["error"]


def test_command_line_writes_the_roster(tmp_path: Path) -> None:
    port = free_port()
    report = tmp_path / "out" / "world.json"
    procs = [subprocess.Popen([sys.executable, "-m", "snakemake_executor_plugin_slurm_gpu.runtime.rendezvous",
                               "--report", str(report), "--timeout", "30"], text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=rank_env(r, 2, 2, port, tmp_path))
             for r in range(4)]
    lines = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=60)
        assert p.returncode == 0, stderr
        lines.append(stdout.strip())
    assert lines[3] == f"rank 3/4 local 1 node n2 master 127.0.0.1:{port}"
    world = json.loads(report.read_text())
    assert world["world_size"] == 4 and world["num_nodes"] == 2 and world["restart"] == 0
    assert [(m["rank"], m["node"], m["local_rank"]) for m in world["members"]] == \
        [(0, "n1", 0), (1, "n1", 1), (2, "n2", 0), (3, "n2", 1)]


def test_command_line_outside_a_step_says_what_is_missing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM", "MASTER_"))}
    env["SLURM_GPU_NODES"], env["SLURM_GPU_TASKS_PER_NODE"] = "1", "2"
    proc = subprocess.run([sys.executable, "-m", "snakemake_executor_plugin_slurm_gpu.runtime.rendezvous"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 1 and "MASTER_ADDR/MASTER_PORT are not set" in proc.stderr


def test_an_allreduce_waits_for_a_slow_rank_0_past_every_join_timeout(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # ranks as threads of this process: join() takes its environment as an argument
    monkeypatch.setattr(rendezvous, "CONNECT_TIMEOUT_S", 0.2)
    port = free_port()
    got: dict[int, list[float]] = {}

    def rank(r: int) -> None:
        world = rendezvous.join(timeout_s=1.0, environ=rank_env(r, 1, 2, port, tmp_path))
        if r == 0:
            time.sleep(2.0)  # a long step: longer than join's and the connection's timeouts
        got[r] = world.allreduce([r + 1.0])
        world.close()

    threads = [threading.Thread(target=rank, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert got == {0: [3.0], 1: [3.0]}
