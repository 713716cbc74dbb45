"""Training on several processes (GPUs, machines) under torchrun: DistributedDataParallel, rank 0 in charge.

    torchrun --nproc_per_node 2 .venv/bin/proverbot train --corpus texts.txt --batch-size 8 ...

    world = from_env()                       # RANK, WORLD_SIZE, LOCAL_RANK as torchrun sets them; size 1 without
    check_batch(world, batch_size)           # before any process connects: the same error on every rank
    with process_group(world, device):       # nccl on CUDA, gloo on CPU; destroyed on the way out, error or not
        ...

--batch-size is the global batch: each process draws the same global batch of windows from the same generator
and trains on its own slice (rank r: rows r*B/N .. (r+1)*B/N - 1), so N processes step exactly as one process
with the whole batch would (up to the order of float sums in the gradients' all-reduce), and the saved random
state is the same whichever number of processes resumes it.
"""

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from model.errors import ModelError

@dataclass(frozen=True)
class World:
    """This process's place in the job: rank 0 of 1 when not started by torchrun."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that prints, samples, validates and saves."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.size > 1


def from_env(env=os.environ) -> World:
    """The World torchrun describes in RANK, WORLD_SIZE and LOCAL_RANK (World() when WORLD_SIZE is unset or 1).

    >>> from_env({"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2"})
    World(rank=1, local_rank=1, size=2)
    """
    if env.get("WORLD_SIZE", "1") == "1":
        return World()
    try:
        world = World(int(env["RANK"]), int(env.get("LOCAL_RANK", env["RANK"])), int(env["WORLD_SIZE"]))
    except (KeyError, ValueError):
        raise ModelError("WORLD_SIZE is set, so RANK and LOCAL_RANK must be whole numbers too (torchrun sets all "
                         "three; unset WORLD_SIZE to train in one process).") from None
    if not 0 <= world.rank < world.size or world.local_rank < 0:
        raise ModelError(f"RANK must be in 0..WORLD_SIZE-1 and LOCAL_RANK at least 0 (got RANK={world.rank}, "
                         f"LOCAL_RANK={world.local_rank}, WORLD_SIZE={world.size}).")
    return world


def check_batch(world: World, batch_size: int) -> None:
    """--batch-size is split evenly across the processes: a world size that does not divide it is an error."""
    if batch_size % world.size:
        nearest = world.size * max(1, batch_size // world.size)
        raise ModelError(f"--batch-size {batch_size} cannot be split across {world.size} processes: it is the global "
                         f"batch, so it must be a multiple of the number of processes (e.g. {nearest}).")


def rank_device(world: World, device: torch.device) -> torch.device:
    """Under torchrun on CUDA each process trains on its own GPU, cuda:LOCAL_RANK."""
    if world.is_distributed and device.type == "cuda":
        if world.local_rank >= torch.cuda.device_count():
            raise ModelError(f"LOCAL_RANK {world.local_rank} has no GPU: this machine has "
                             f"{torch.cuda.device_count()}; start at most that many processes per machine.")
        torch.cuda.set_device(world.local_rank)
        return torch.device("cuda", world.local_rank)
    return device


@contextlib.contextmanager
def process_group(world: World, device: torch.device):
    """Connect the job's processes (nccl on CUDA, gloo otherwise) for the block; always disconnect after, so that
    an error in one process ends it (non-zero) instead of leaving it waiting."""
    if not world.is_distributed:
        yield
        return
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=world.rank, world_size=world.size)
    try:
        yield
        dist.barrier()  # every process done: no collective still settling in gloo's threads when the group goes
    finally:
        dist.destroy_process_group()


def wrap(world: World, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The module the training passes run through: DistributedDataParallel under torchrun (gradients averaged
    across processes; no device_ids on CPU), else the model itself. Build it after choosing what trains."""
    if not world.is_distributed:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def accumulating(model: torch.nn.Module, last: bool):
    """Gradient accumulation under DDP: only the last micro-batch's backward pass averages across processes."""
    if isinstance(model, DistributedDataParallel) and not last:
        return model.no_sync()
    return contextlib.nullcontext()


def my_rows(world: World, ix: torch.Tensor) -> torch.Tensor:
    """This process's slice of a global batch of window starts."""
    per = len(ix) // world.size
    return ix[world.rank * per:(world.rank + 1) * per]


def barrier(world: World) -> None:
    """Wait here until every process has come here (e.g. while rank 0 finishes a checkpoint)."""
    if world.is_distributed:
        dist.barrier()


def mean(world: World, value: float) -> float:
    """The mean of a number over the processes (the job's loss: every slice is the same size)."""
    if not world.is_distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t)
    return t.item() / world.size


def agree(world: World, code: int) -> int:
    """The highest of the processes' numbers (e.g. stop codes, so that all stop at the same step)."""
    if not world.is_distributed:
        return code
    t = torch.tensor([code], device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def same_everywhere(world: World, name: str, value: int, hint: str) -> None:
    """A ModelError (saying `hint`) when the processes disagree on a number, e.g. the step they resume from."""
    if world.is_distributed and agree(world, value) != -agree(world, -value):
        raise ModelError(f"The processes see a different {name} (rank {world.rank}: {value}): {hint}.")


def _collective_device() -> torch.device:
    """nccl reduces tensors on this process's GPU, gloo on the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
