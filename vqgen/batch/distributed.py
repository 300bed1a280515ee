"""Running under torchrun: which process we are, and the two numbers a batch's processes exchange.

torchrun (single- or multi-node) sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT.
Each process computes the whole job list itself and takes its share, so the only things exchanged
are the random base seed (drawn once, on rank 0) and the final counts. They go through the c10d
key-value store that torchrun already runs (rank 0 hosts one when started without torchrun), not
through a process group: a gloo or NCCL group would be heavy machinery for two numbers, and gloo's
worker threads release the tensors of the last collective a moment after it returns; when the
interpreter is already shutting down by then, that release needs the GIL and the process aborts
("terminate called without an active exception", SIGABRT at exit after every image was written).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from datetime import timedelta

from ..errors import UsageError

# Ranks wait for each other only at the start and at the end; the end can come hours apart when
# the shares take unequal time. If a process dies, torchrun stops the others, so a long wait
# never hangs forever.
TIMEOUT = timedelta(days=7)


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    launched: bool = False  # started by torchrun (even with one process)

    @property
    def main(self) -> bool:
        return self.rank == 0


def detect() -> World:
    env = os.environ
    if not all(k in env for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR")):
        return World()
    try:
        rank, size, local = int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", "0"))
    except ValueError:
        raise UsageError("RANK, WORLD_SIZE and LOCAL_RANK must be whole numbers (they are set by torchrun)") from None
    if "MASTER_PORT" not in env:
        raise UsageError("MASTER_ADDR is set but MASTER_PORT is not; start the command with torchrun (which sets both)")
    if not 0 <= rank < size:
        raise UsageError(f"RANK {rank} is outside WORLD_SIZE {size}; start the command with torchrun")
    return World(rank, size, local, launched=True)


def device_for(world: World, requested: str) -> str:
    """Each process on its own GPU: `auto`/`cuda` become cuda:LOCAL_RANK under torchrun."""
    if not world.launched or requested not in ("auto", "cuda"):
        return requested
    import torch

    if torch.cuda.is_available():
        if world.local_rank >= torch.cuda.device_count():
            raise UsageError(f"LOCAL_RANK {world.local_rank} has no GPU: this machine has {torch.cuda.device_count()}; "
                             f"use torchrun --nproc_per_node {torch.cuda.device_count()} or fewer")
        return f"cuda:{world.local_rank}"
    return "cpu" if requested == "auto" else requested


class Group:
    """The processes of one batch run meeting over the store, or nothing at all outside torchrun."""

    PREFIX = "vqgen/batch"

    def __init__(self, world: World, device=None):
        self.world, self.device = world, device
        self._store = None
        self._met = False  # sum_ints done: the other ranks will read the counts from rank 0's store
        if world.launched:
            import torch.distributed as dist

            store, _, _ = next(dist.rendezvous("env://", rank=world.rank, world_size=world.size))
            store.set_timeout(TIMEOUT)
            # torchrun's store outlives a restart of the workers (--max-restarts): keys of an
            # earlier attempt must not be read as this one's.
            attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
            self._store = dist.PrefixStore(f"{self.PREFIX}/{attempt}/", store)

    def broadcast_int(self, value: int) -> int:
        """Rank 0's value on every rank."""
        if self._store is None:
            return value
        if self.world.main:
            self._store.set("seed", str(value))
            return value
        return int(self._store.get("seed"))

    def sum_ints(self, values: list[int]) -> list[int]:
        """Element-wise sums over all ranks; also the end-of-run meeting point (a barrier)."""
        if self._store is None:
            return list(values)
        store, size = self._store, self.world.size
        store.set(f"counts/{self.world.rank}", json.dumps(list(values)))
        keys = [f"counts/{r}" for r in range(size)]
        store.wait(keys)
        totals = [sum(column) for column in zip(*(json.loads(store.get(k)) for k in keys))]
        store.add("read", 1)
        self._met = True
        return totals

    def close(self) -> None:
        """Without torchrun, rank 0 hosts the store: it stays until every rank has read the counts."""
        if self._store is not None and self.world.main and self._met:
            deadline = time.monotonic() + 60
            while self._store.add("read", 0) < self.world.size and time.monotonic() < deadline:
                time.sleep(0.05)
        self._store = None
