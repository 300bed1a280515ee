"""Fewer steps done right: the multi-step posterior, the schedules, and the purity sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vqgen.config import ScheduleConfig
from vqgen.pipeline import Pipeline, Settings
from vqgen.sampling import gumbel_sample, posterior_logits
from vqgen.schedule import NoiseSchedule, timesteps_for


def one_step_matrix(schedule: NoiseSchedule, t: int) -> np.ndarray:
    """Q_t[i, j] = q(x_t = j | x_{t-1} = i), K x K, the mask (last) absorbing."""
    K = schedule.num_classes
    att_prev, ctt_prev = (schedule.att[t - 1], schedule.ctt[t - 1]) if t > 0 else (1.0, 0.0)
    a = schedule.att[t] / att_prev
    c = 1 - (1 - schedule.ctt[t]) / (1 - ctt_prev)
    b = (1 - a - c) / (K - 1)
    Q = np.full((K, K), b)
    Q[np.arange(K - 1), np.arange(K - 1)] += a
    Q[:, -1] = c
    Q[-1, :] = 0
    Q[-1, -1] = 1
    return Q


def brute_force_posterior(schedule, p_x0: np.ndarray, x_t: int, t: int, s: int) -> np.ndarray:
    """p(x_s | x_t) = sum_x0 q(x_s | x_t, x0) p(x0 | x_t) from explicit transition matrices."""
    K = schedule.num_classes
    Q = [one_step_matrix(schedule, i) for i in range(t + 1)]
    cum = lambda lo, hi: np.linalg.multi_dot([np.eye(K)] + Q[lo:hi + 1] + [np.eye(K)])  # noqa: E731
    q_s_given_x0 = cum(0, s)  # rows x0
    q_t_given_s = cum(s + 1, t)  # rows x_s
    q_t_given_x0 = cum(0, t)
    out = np.zeros(K)
    for x0 in range(K - 1):
        joint = q_s_given_x0[x0] * q_t_given_s[:, x_t]
        out += joint / q_t_given_x0[x0, x_t] * p_x0[x0]
    return out / out.sum()


@pytest.mark.parametrize("t,s", [(9, 8), (9, 4), (9, 0), (5, 2), (3, 1)])
def test_multi_step_posterior_equals_brute_force(t, s):
    K, T = 6, 10
    schedule = NoiseSchedule(ScheduleConfig(num_timesteps=T, num_classes=K))
    g = torch.Generator().manual_seed(t * 10 + s)
    logp = torch.log_softmax(2 * torch.randn(1, K - 1, K, generator=g), dim=1)
    x_t = torch.arange(K)[None]  # every class once, the mask included
    logits = posterior_logits(logp, x_t, schedule.transitions([t], [s])[0])
    ours = torch.softmax(logits.double(), dim=1)[0]
    for n in range(K):
        expected = brute_force_posterior(schedule, logp[0, :, n].double().exp().numpy(), n, t, s)
        np.testing.assert_allclose(ours[:, n].numpy(), expected, atol=2e-5)


@pytest.mark.parametrize("t,s", [(99, 75), (60, 20), (30, 0)])
def test_fraction_of_masks_opened(t, s):
    K, B, N = 17, 8, 4096
    schedule = NoiseSchedule(ScheduleConfig(num_classes=K))
    logp = torch.log_softmax(torch.randn(B, K - 1, N, generator=torch.Generator().manual_seed(1)), dim=1)
    x_t = torch.full((B, N), K - 1)
    x_s = gumbel_sample(posterior_logits(logp, x_t, schedule.transitions([t], [s])[0]),
                        [torch.Generator().manual_seed(i) for i in range(B)])
    opened = (x_s != K - 1).float().mean().item()
    expected = 1 - schedule.ctt[s] / schedule.ctt[t]
    assert abs(opened - expected) < 0.01, (opened, expected)


def test_strided_timesteps():
    assert timesteps_for("strided", 100, 100) == list(range(99, -1, -1))
    steps = timesteps_for("strided", 100, 25)
    assert len(steps) == 25 and steps[0] == 99 and steps[-1] == 0 and steps == sorted(set(steps), reverse=True)
    assert timesteps_for("strided", 100, 2) == [99, 0]
    assert timesteps_for("strided", 100, 1) == [99]
    assert timesteps_for("diffusers", 100, 25) == list(range(24, -1, -1))


@pytest.fixture(scope="module")
def pipe(diffusers_folder):
    return Pipeline.from_folder(diffusers_folder, device="cpu", exact=True)


@pytest.mark.parametrize("steps", [25, 10, 1])
def test_diffusers_schedule_is_bit_exact_for_any_step_count(pipe, ref_pipe, reference, steps):
    ref_tokens, ref_image = reference(ref_pipe, "a red bus", 21, 5.0, 1.0, steps=steps)
    tokens, _, _ = pipe.generate_tokens(["a red bus"], [21], Settings(steps=steps, schedule="diffusers"))
    assert torch.equal(tokens[0], ref_tokens)
    assert np.array_equal(np.asarray(pipe.decode(tokens)[0]), ref_image)


def test_strided_with_all_steps_is_the_reference(pipe, ref_pipe, reference):
    ref_tokens, _ = reference(ref_pipe, "a red bus", 22)
    tokens, timesteps, _ = pipe.generate_tokens(["a red bus"], [22], Settings(steps=100, schedule="strided"))
    assert timesteps == list(range(99, -1, -1))
    assert torch.equal(tokens[0], ref_tokens)


@pytest.mark.parametrize("sampler", ["posterior", "purity"])
@pytest.mark.parametrize("schedule", ["strided", "diffusers"])
@pytest.mark.parametrize("steps,guidance", [(1, 5.0), (7, 5.0), (100, 1.0)])
def test_every_combination_runs_and_repeats(pipe, sampler, schedule, steps, guidance):
    settings = Settings(steps=steps, schedule=schedule, sampler=sampler, guidance=guidance)
    a, _, _ = pipe.generate_tokens(["a cat", "a dog"], [3, 4], settings)
    b, _, _ = pipe.generate_tokens(["a cat", "a dog"], [3, 4], settings)
    assert torch.equal(a, b)
    assert (a < 64).all(), "no mask token may survive the last step"
    c, _, _ = pipe.generate_tokens(["a cat"], [5], settings)
    assert not torch.equal(a[0], c[0])


def test_purity_opens_masks_on_schedule_and_keeps_open_tokens(pipe):
    """Record x after each step: the mask count follows ctt, and open tokens never change until the
    final step, which draws x0 everywhere."""
    from vqgen import sampling

    seen = []
    original = sampling.purity_step

    def spy(logp, x, keep, weight, generators):
        out = original(logp, x, keep, weight, generators)
        seen.append((x.clone(), out.clone(), keep[0]))
        return out

    import vqgen.pipeline as pipeline_module

    pipeline_module.purity_step, saved = spy, pipeline_module.purity_step
    try:
        pipe.generate_tokens(["a red bus"], [9], Settings(steps=20, sampler="purity"))
    finally:
        pipeline_module.purity_step = saved
    assert len(seen) == 19
    for before, after, keep in seen:
        was_open = before != 64
        assert torch.equal(after[was_open], before[was_open])
        m = int((before == 64).sum())
        assert int((after == 64).sum()) == round(m * keep)
    assert int((seen[-1][1] == 64).sum()) <= 1


def test_purity_weight_changes_the_image(pipe):
    a, _, _ = pipe.generate_tokens(["a red bus"], [9], Settings(steps=20, sampler="purity", purity_weight=0.0))
    b, _, _ = pipe.generate_tokens(["a red bus"], [9], Settings(steps=20, sampler="purity", purity_weight=3.0))
    assert not torch.equal(a, b)
