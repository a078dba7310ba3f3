"""A torch-free rendezvous over the master address and port that slurm-gpu exports, and a tiny
all-reduce on top of it.

Every rank connects to MASTER_ADDR:MASTER_PORT, where rank 0 listens, and says who it is (rank,
local rank, node, the master it was told, its restart count). Rank 0 checks that the people who came
are exactly the world the step was submitted for (every rank once, the same master and restart for
all, each node with local ranks 0..G-1) and sends everyone the roster, or the reason there is none.

Why it exists: it is the DDP rendezvous without the seconds of torch import per rank, so that

    srun python -m snakemake_executor_plugin_slurm_gpu.runtime.rendezvous --report world.json

checks a 256-rank world (names resolve, the port is reachable from every node, srun started the
geometry that was submitted) before a real job spends its queue wait on it; and a stand-in training
command (the scale tests, the sweep example) can act on a requeue signal at a step boundary with all
ranks together, as the Lightning callback does, through `World.allreduce`.

Line-delimited JSON over TCP, rank 0 in the middle: fine for a few hundred ranks and small
messages, not a replacement for a collective library.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from .. import checkpoints, events
from ..contract import job_id
from ..rank_ranges import span as _span
from .environment import geometry, settle_master, under_torchrun

DEFAULT_TIMEOUT_S = 300.0
CONNECT_TIMEOUT_S = 5.0  # one connection attempt; join() retries until its own timeout


class RendezvousError(RuntimeError):
    """The ranks could not form the world the step was submitted for."""


@dataclass(frozen=True)
class Member:
    rank: int
    local_rank: int
    node: str
    node_rank: int
    world_size: int
    master: str      # "addr:port" as this rank was told it
    restart: int
    pid: int


@dataclass(frozen=True)
class Expected:
    world_size: int
    num_nodes: int
    tasks_per_node: int
    master: str
    restart: int


def problems(members: Sequence[Member], expected: Expected) -> list[str]:
    """Everything that makes `members` not the expected world; empty when it is that world."""
    out: list[str] = []
    ranks = defaultdict(list)
    for m in members:
        ranks[m.rank].append(m)
    doubles = sorted(r for r, ms in ranks.items() if len(ms) > 1)
    if doubles:
        out.append(f"rank(s) {_span(doubles)} came more than once")
    missing = sorted(set(range(expected.world_size)) - set(ranks))
    if missing:
        out.append(f"rank(s) {_span(missing)} never came")
    strangers = sorted(r for r in ranks if not 0 <= r < expected.world_size)
    if strangers:
        out.append(f"rank(s) {_span(strangers)} are outside a world of {expected.world_size}")
    for what, want, got in (("world size", str(expected.world_size), lambda m: str(m.world_size)),
                            ("master", expected.master, lambda m: m.master),
                            ("restart", str(expected.restart), lambda m: str(m.restart))):
        odd = sorted(m.rank for m in members if got(m) != want)
        if odd:
            seen = sorted({got(m) for m in members if got(m) != want})
            out.append(f"rank(s) {_span(odd)} have {what} {', '.join(seen)}, rank 0 has {want}")
    by_node: dict[str, list[Member]] = defaultdict(list)
    for m in members:
        by_node[m.node].append(m)
    if len(by_node) != expected.num_nodes:
        out.append(f"ranks came from {len(by_node)} node(s), the step has {expected.num_nodes}")
    for node, ms in sorted(by_node.items()):
        local = sorted(m.local_rank for m in ms)
        if local != list(range(expected.tasks_per_node)):
            out.append(f"node {node} has local ranks {_span(local)}, expected 0-{expected.tasks_per_node - 1}")
        if len({m.node_rank for m in ms}) != 1:
            out.append(f"node {node} has ranks that disagree on its node rank")
    node_ranks = [ms[0].node_rank for ms in by_node.values()]
    if len(set(node_ranks)) != len(node_ranks):
        out.append("two nodes claim the same node rank")
    return out


class _Channel:
    """One TCP connection carrying JSON lines."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self._buf = b""

    def send(self, message: Mapping[str, Any]) -> None:
        self.sock.sendall(json.dumps(message).encode() + b"\n")

    def receive(self, deadline: float | None, peer: str) -> dict[str, Any]:
        while b"\n" not in self._buf:
            if deadline is None:
                self.sock.settimeout(None)  # not the connect timeout the socket was made with
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RendezvousError(f"timed out waiting for {peer}")
                self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise RendezvousError(f"timed out waiting for {peer}") from None
            except OSError as e:
                raise RendezvousError(f"lost the connection to {peer}: {e}") from None
            if not chunk:
                raise RendezvousError(f"{peer} closed the connection")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class World:
    """The joined ranks. Rank 0 holds a connection to every other rank; the others one to rank 0."""

    def __init__(self, me: Member, roster: list[Member], peers: dict[int, _Channel], joined_s: float) -> None:
        self.me = me
        self.roster = roster
        self.joined_s = joined_s  # this rank's time from the start of join() to the roster
        self._peers = peers       # rank 0: rank -> channel; others: {0: channel}

    @property
    def rank(self) -> int:
        return self.me.rank

    @property
    def world_size(self) -> int:
        return len(self.roster)

    def allreduce(self, values: Sequence[float], op: str = "sum", timeout_s: float | None = None) -> list[float]:
        """Every rank gives a list of the same length and gets back the element-wise sum (or max).
        Rank 0 adds in rank order, so every rank, and every rerun, gets the same floats."""
        if op not in ("sum", "max"):
            raise ValueError(f"op must be 'sum' or 'max', not {op!r}")
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        mine = [float(v) for v in values]
        if self.rank != 0:
            self._peers[0].send({"v": mine})
            return [float(v) for v in self._peers[0].receive(deadline, "rank 0")["v"]]
        total = list(mine)
        for rank in sorted(self._peers):
            got = self._peers[rank].receive(deadline, f"rank {rank}")["v"]
            if len(got) != len(total):
                raise RendezvousError(f"rank {rank} gave {len(got)} values, rank 0 has {len(total)}")
            total = [a + b if op == "sum" else max(a, b) for a, b in zip(total, got)]
        for rank in sorted(self._peers):
            self._peers[rank].send({"v": total})
        return total

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on any: the step-boundary agreement on a signal."""
        return self.allreduce([1.0 if flag else 0.0], op="max")[0] > 0

    def close(self) -> None:
        for channel in self._peers.values():
            channel.close()
        self._peers = {}

    def report(self) -> dict[str, Any]:
        return {
            "world_size": self.world_size,
            "num_nodes": len({m.node for m in self.roster}),
            "master": self.me.master,
            "restart": self.me.restart,
            "job_id": job_id(),
            "nodelist": os.environ.get("SLURM_JOB_NODELIST"),
            "joined_s": round(self.joined_s, 3),
            "joined_at": round(time.time(), 3),
            "members": [asdict(m) for m in self.roster],
        }


def announce(environ: Mapping[str, str] | None = None) -> None:
    """rank_started: the hang watchdog's evidence of who reached the rendezvous, and whether this
    node can even resolve the master address (the usual reason a node never joins)."""
    env = os.environ if environ is None else environ
    if environ is None:
        settle_master()  # allocation mode: MASTER_ADDR/PORT of this step, before anyone reads them
    addr = env.get("MASTER_ADDR")
    error = None
    if addr:
        try:
            socket.getaddrinfo(addr, None)
        except OSError as e:
            error = str(e)
    torchrun = under_torchrun(env)  # then torchrun's numbering: Slurm's counts tasks, one per node
    events.emit("rank_started", rank=int(env.get("RANK" if torchrun else "SLURM_PROCID") or 0),
                local_rank=int(env.get("LOCAL_RANK" if torchrun else "SLURM_LOCALID") or 0),
                node=env.get("SLURMD_NODENAME") or socket.gethostname(),
                restart=int(env.get("SLURM_RESTART_COUNT") or 0),
                world_size=int(env.get("WORLD_SIZE" if torchrun else "SLURM_NTASKS") or 1), master_addr=addr,
                master_error=error)


def join(timeout_s: float = DEFAULT_TIMEOUT_S, environ: Mapping[str, str] | None = None) -> World:
    """Meet every other rank of this step at the master address. Raises RendezvousError (naming
    who is missing or wrong) instead of waiting forever."""
    env = os.environ if environ is None else environ
    if environ is None:
        settle_master()  # allocation mode: this step's MASTER_ADDR/PORT
    start = time.monotonic()
    deadline = start + timeout_s
    world = geometry(env)  # GeometryError when srun started another world than was submitted
    if world.master_addr is None or world.master_port is None:
        raise RendezvousError("MASTER_ADDR/MASTER_PORT are not set. HINT: run inside a slurm-gpu step "
                              "(its batch script exports them), or export them for a local run")
    restart = int(env.get("SLURM_RESTART_COUNT") or 0)
    master = f"{world.master_addr}:{world.master_port}"
    me = Member(rank=world.rank, local_rank=world.local_rank,
                node=env.get("SLURMD_NODENAME") or socket.gethostname(), node_rank=world.node_rank,
                world_size=world.world_size, master=master, restart=restart, pid=os.getpid())
    expected = Expected(world.world_size, world.num_nodes, world.devices, master, restart)
    announce(env)
    if world.world_size == 1:
        out = World(me, [me], {}, time.monotonic() - start)
    elif world.rank == 0:
        out = _host(me, expected, world.master_port, deadline, start)
    else:
        out = _visit(me, world.master_addr, world.master_port, deadline, start)
    events.emit("rank_ready", rank=me.rank, node=me.node, restart=restart, world_size=out.world_size)
    return out


def _host(me: Member, expected: Expected, port: int, deadline: float, start: float) -> World:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # a requeued job comes back with the same id, so the same port, maybe on the same node while
    # the last run's connections still sit in TIME_WAIT
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("", port))
    server.listen(min(expected.world_size, 4096))
    peers: dict[int, _Channel] = {}
    members = [me]
    try:
        while len(members) < expected.world_size:
            left = deadline - time.monotonic()
            if left <= 0:
                came = {m.rank for m in members}
                missing = sorted(set(range(expected.world_size)) - came)
                raise RendezvousError(f"rank(s) {_span(missing)} did not reach {me.master} within "
                                      f"{deadline - start:.0f} s ({len(members)} of {expected.world_size} came)")
            server.settimeout(left)
            try:
                sock, _ = server.accept()
            except socket.timeout:
                continue
            channel = _Channel(sock)
            hello = channel.receive(deadline, "a connecting rank")
            member = Member(**{k: hello[k] for k in Member.__dataclass_fields__})
            members.append(member)
            if member.rank in peers:  # the roster check names it; keep both to tell them about it
                peers[-len(members)] = channel
            else:
                peers[member.rank] = channel
        found = problems(members, expected)
        roster = sorted(members, key=lambda m: m.rank)
        for channel in peers.values():
            channel.send({"error": "; ".join(found)} if found else {"roster": [asdict(m) for m in roster]})
        if found:
            raise RendezvousError("the ranks do not form the submitted world: " + "; ".join(found))
        return World(me, roster, peers, time.monotonic() - start)
    except BaseException:
        for channel in peers.values():
            channel.close()
        raise
    finally:
        server.close()


def _visit(me: Member, addr: str, port: int, deadline: float, start: float) -> World:
    last_error: Exception | None = None
    while True:
        try:
            sock = socket.create_connection((addr, port), timeout=max(0.1, min(CONNECT_TIMEOUT_S, deadline - time.monotonic())))
            break
        except OSError as e:  # rank 0 not listening yet, or (for good) a name this node cannot resolve
            last_error = e
        if time.monotonic() >= deadline:
            raise RendezvousError(f"rank {me.rank} on {me.node} could not reach the master {addr}:{port} "
                                  f"within {deadline - start:.0f} s: {last_error}")
        time.sleep(0.2)
    channel = _Channel(sock)
    try:
        channel.send(asdict(me))
        answer = channel.receive(deadline, f"rank 0 at {addr}:{port}")
    except BaseException:
        channel.close()
        raise
    if "error" in answer:
        channel.close()
        raise RendezvousError("the ranks do not form the submitted world: " + answer["error"])
    roster = [Member(**m) for m in answer["roster"]]
    return World(me, roster, {0: channel}, time.monotonic() - start)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m snakemake_executor_plugin_slurm_gpu.runtime.rendezvous",
        description="Check, without torch, that every rank of this step reaches the master address "
                    "and that they form the world the step was submitted for. Run it with srun.")
    parser.add_argument("--report", type=Path, help="rank 0 writes the roster here (JSON)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds (default %(default)s)")
    args = parser.parse_args(argv)
    try:
        world = join(args.timeout)
    except (RendezvousError, RuntimeError) as e:
        print(f"slurm-gpu rendezvous: rank {os.environ.get('SLURM_PROCID', '?')}: {e}", file=sys.stderr, flush=True)
        return 1
    me = world.me
    print(f"rank {me.rank}/{world.world_size} local {me.local_rank} node {me.node} master {me.master}", flush=True)
    world.any(False)  # nobody leaves before everybody has the roster
    if world.rank == 0 and args.report is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        checkpoints.atomic_write_bytes(args.report, json.dumps(world.report(), indent=1).encode())
    world.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
