"""Learning-rate schedules: a linear warm-up, then constant (the default, as gpt-2-simple trains), linear or
cosine decay towards 0 at the run's last step.

    scheduler = lr_scheduler(optimizer, "cosine", warmup_steps=100, total_steps=2000)
    optimizer.step(); scheduler.step()                  # after every optimizer step

The n-th optimizer step (n = 1, 2, ...) trains at learning_rate x lr_factor(n - 1, ...): n / warmup_steps during
the warm-up, then 1 (constant), or falling from 1 towards 0 at total_steps (linear: a straight line; cosine: half a
cosine wave). The factor depends on the step number alone, so a resumed run continues its schedule at its step.
"""

import math

import torch

SCHEDULES = ("constant", "linear", "cosine")


def lr_factor(step: int, schedule: str, warmup_steps: int, total_steps: int | None) -> float:
    """The share of the learning rate for the optimizer step after `step` steps; total_steps may be None for
    constant only.

    >>> [round(lr_factor(s, "cosine", 2, 10), 3) for s in (0, 1, 2, 6, 9)]
    [0.5, 1.0, 1.0, 0.5, 0.038]
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
    if schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def lr_scheduler(optimizer: torch.optim.Optimizer, schedule: str, warmup_steps: int,
                 total_steps: int | None) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR on `optimizer` that follows lr_factor; the optimizer's learning rate becomes the first step's."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, schedule, warmup_steps, total_steps))


def continue_schedule(scheduler: torch.optim.lr_scheduler.LambdaLR, step: int) -> None:
    """Put `scheduler` at `step` steps done, as if it had stepped that far (a resumed run whose saved schedule
    differs: another learning rate, schedule, warm-up or end)."""
    scheduler.last_epoch = step
    for group, base, factor in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * factor(step)
