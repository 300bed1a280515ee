"""The VQ-Diffusion noise schedule (SPEC section 5) and transitions between any two timesteps.

Forward process from a clean token x0: after t+1 corruption steps (timestep t = 0..T-1) a token is
still itself with probability att[t] + btt[t], any other given real class with probability btt[t],
and the mask with probability ctt[t]. The mask is absorbing.

Values are computed in float64 with numpy, logged in float64 and stored as float32: the same
sequence of operations as the reference, so that log-tables agree bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .config import ScheduleConfig
from .settings import SCHEDULES  # noqa: F401 (the names live with the other settings' rules)


def cumulative_tables(cfg: ScheduleConfig) -> tuple[np.ndarray, np.ndarray]:
    """att, ctt of length T+1; index T (also reachable as -1) is the 'no corruption' sentinel."""
    T = cfg.num_timesteps
    steps = np.arange(0, T) / (T - 1)
    att = steps * (cfg.alpha_cum_end - cfg.alpha_cum_start) + cfg.alpha_cum_start
    ctt = steps * (cfg.gamma_cum_end - cfg.gamma_cum_start) + cfg.gamma_cum_start
    return np.concatenate((att, [1.0])), np.concatenate((ctt, [0.0]))


def _log32(values: np.ndarray) -> torch.Tensor:
    return torch.log(torch.tensor(np.asarray(values, dtype=np.float64))).float()


@dataclass(frozen=True)
class Transition:
    """log (alpha, beta, gamma) of the jump t -> s's forward counterpart (s < t), plus s's cumulative
    log (att, btt, ctt) and t's. One row per reverse step, float32 scalars as 0-d tensors."""

    log_a: torch.Tensor  # stay itself, from s to t
    log_b: torch.Tensor  # become one given other real class
    log_c: torch.Tensor  # become the mask
    log_att_t: torch.Tensor
    log_btt_t: torch.Tensor
    log_ctt_t: torch.Tensor
    log_att_s: torch.Tensor
    log_btt_s: torch.Tensor
    log_ctt_s: torch.Tensor


class NoiseSchedule:
    def __init__(self, cfg: ScheduleConfig):
        self.cfg = cfg
        self.num_timesteps = cfg.num_timesteps
        self.num_classes = cfg.num_classes
        self.att, self.ctt = cumulative_tables(cfg)  # float64, length T+1
        self.btt = (1 - self.att - self.ctt) / (cfg.num_classes - 1)
        self.log_att, self.log_btt, self.log_ctt = (_log32(v) for v in (self.att, self.btt, self.ctt))

    def transitions(self, timesteps: list[int], previous: list[int]) -> list[Transition]:
        """Transitions for reverse steps t_i -> s_i. For s = t-1 they are the reference's one-step
        tables (at, bt, ct); for larger jumps the same family with alpha = att[t]/att[s] and
        1 - gamma = (1-ctt[t])/(1-ctt[s]) (SPEC section 8). s = -1 means 'from clean data'."""
        t = np.asarray(timesteps)
        s = np.asarray(previous)
        alpha = self.att[t] / self.att[s]
        gamma = 1 - (1 - self.ctt[t]) / (1 - self.ctt[s])
        beta = (1 - alpha - gamma) / (self.num_classes - 1)
        log_a, log_b, log_c = _log32(alpha), _log32(beta), _log32(gamma)
        return [
            Transition(
                log_a=log_a[i], log_b=log_b[i], log_c=log_c[i],
                log_att_t=self.log_att[ti], log_btt_t=self.log_btt[ti], log_ctt_t=self.log_ctt[ti],
                log_att_s=self.log_att[si], log_btt_s=self.log_btt[si], log_ctt_s=self.log_ctt[si],
            )
            for i, (ti, si) in enumerate(zip(timesteps, previous))
        ]


@dataclass(frozen=True)
class Chain:
    """The timesteps a model can run: 0 .. length-1 of its scheduler's train_timesteps (T) tables.

    The transformer is told the timestep through an embedding with one row per timestep
    (num_embeds_ada_norm). When it has fewer rows than the scheduler has timesteps (diffusers' own
    test components: 12 rows, T = 100), timesteps from `length` on cannot be told to it, so the
    usable chain is the last `length` timesteps of the T-step chain, still with the T-step noise
    tables: exactly what diffusers can run on such a model (num_inference_steps <= length)."""

    length: int
    train_timesteps: int

    @classmethod
    def of(cls, train_timesteps: int, transformer_timesteps: int) -> Chain:
        return cls(min(train_timesteps, transformer_timesteps), train_timesteps)

    def describe(self) -> str:
        """Why at most `length` steps, for error messages."""
        if self.length == self.train_timesteps:
            return f"this model's chain has {self.length} steps"
        return (f"this model's transformer knows only timesteps 0..{self.length - 1} of its scheduler's "
                f"{self.train_timesteps}, so it runs at most {self.length} steps")


def timesteps_for(schedule: str, num_timesteps: int, steps: int) -> list[int]:
    """The timesteps a generation of `steps` network calls visits, in order, on a usable chain of
    `num_timesteps` (Chain.length: T, or fewer when the transformer knows fewer timesteps).

    strided:   spread over the whole usable chain, num_timesteps-1 down to 0 with both ends
               included, each step sampling from the exact multi-step posterior. A single step
               starts at num_timesteps-1.
    diffusers: the reference's choice, the LAST `steps` timesteps (steps-1 ... 0) of the chain from
               an all-mask start. Kept so images made with diffusers can be regenerated.
    Both equal num_timesteps-1 ... 0 when steps == num_timesteps.
    """
    if schedule == "diffusers":
        return list(range(steps - 1, -1, -1))
    if schedule == "strided":
        if steps == 1:
            return [num_timesteps - 1]
        return [int(t) for t in np.linspace(num_timesteps - 1, 0, steps).round()]
    raise ValueError(f"unknown schedule {schedule!r}")


def timesteps_from(schedule: str, num_timesteps: int, steps: int, start: int) -> list[int]:
    """The timesteps of an edit whose chain starts at `start` (<= num_timesteps - 1) instead of the
    top. From the top this is exactly timesteps_for(...).

    strided:   the same density of steps as a full run: about 1 + (steps-1) * start/(num_timesteps-1)
               steps spread from `start` down to 0 (a run of `steps` from the top costs `steps`; from
               30% of the way, about 30% of them).
    diffusers: the reference's last `steps` timesteps, those at or below `start`.
    """
    if start >= num_timesteps - 1:
        return timesteps_for(schedule, num_timesteps, steps)
    if schedule == "diffusers":
        return list(range(min(start, steps - 1), -1, -1))
    if schedule == "strided":
        if steps == 1 or start == 0:
            return [start]
        n = min(start + 1, max(2, round(1 + (steps - 1) * start / (num_timesteps - 1))))
        return list(dict.fromkeys(int(t) for t in np.linspace(start, 0, n).round()))
    raise ValueError(f"unknown schedule {schedule!r}")
