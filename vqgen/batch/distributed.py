"""Running under torchrun: which process we are, and the few collective steps a batch needs.

torchrun (single- or multi-node) sets RANK, WORLD_SIZE, LOCAL_RANK and MASTER_ADDR. Each process
computes the whole job list itself and takes its share, so the only things exchanged are the
random base seed (drawn once, on rank 0) and the final counts. The process group uses NCCL when
the processes run on GPUs (one GPU per process: cuda:LOCAL_RANK) and gloo on the CPU.
"""

from __future__ import annotations

import os
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
    """The process group, or nothing at all outside torchrun."""

    def __init__(self, world: World, device):
        self.world, self.device = world, device
        if world.launched:
            import torch
            import torch.distributed as dist

            if device.type == "cuda":
                torch.cuda.set_device(device)
            backend = "nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(backend, rank=world.rank, world_size=world.size, timeout=TIMEOUT)

    def broadcast_int(self, value: int) -> int:
        """Rank 0's value on every rank."""
        if not self.world.launched:
            return value
        import torch
        import torch.distributed as dist

        tensor = torch.tensor([value], dtype=torch.int64, device=self.device)
        dist.broadcast(tensor, src=0)
        return int(tensor.item())

    def sum_ints(self, values: list[int]) -> list[int]:
        """Element-wise sums over all ranks; also the end-of-run meeting point (a barrier)."""
        if not self.world.launched:
            return list(values)
        import torch
        import torch.distributed as dist

        tensor = torch.tensor(values, dtype=torch.int64, device=self.device)
        dist.all_reduce(tensor)
        return [int(v) for v in tensor.tolist()]

    def close(self) -> None:
        if self.world.launched:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
