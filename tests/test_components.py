"""Each component against diffusers' own module, on the same tiny random weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vqgen.config import ScheduleConfig
from vqgen.pipeline import Pipeline
from vqgen.sampling import apply_guidance, gumbel_sample, posterior_logits, truncate
from vqgen.schedule import NoiseSchedule


@pytest.fixture(scope="module")
def ours(ithq_folder):
    return Pipeline.from_folder(ithq_folder, device="cpu", exact=True)


def test_text_embeddings(ours, ref_pipe):
    for prompt in ["a red bus", "ein Bär über der Straße, 東京", "bus " * 100]:
        ref = ref_pipe._encode_prompt(prompt, 1, True)  # [null ; prompt]
        mine = ours.c.text_encoder.encode([prompt]).embeddings
        torch.testing.assert_close(mine[0], ref[1], rtol=0, atol=1e-6)
        torch.testing.assert_close(ours.c.text_encoder.null(), ref[0], rtol=0, atol=0)


def test_long_prompt_is_reported(ours):
    encoded = ours.c.text_encoder.encode(["a short one", "bus " * 100])
    assert encoded.truncated == ["bus " * 100]


@pytest.mark.parametrize("t", [99, 50, 0])
def test_transformer_log_probabilities(ours, ref_pipe, t):
    g = torch.Generator().manual_seed(t)
    K, N = ours.c.transformer.cfg.num_classes, ours.c.transformer.cfg.num_tokens
    ids = torch.randint(0, K, (2, N), generator=g)
    text = ref_pipe._encode_prompt("a red bus", 1, True)
    with torch.inference_mode():
        ref = ref_pipe.transformer(ids, encoder_hidden_states=text, timestep=torch.tensor(t)).sample
        mine = ours.c.transformer(ids, torch.tensor(t), ours.c.transformer.text_memory(text))
    assert mine.shape == ref.shape == (2, K - 1, N)
    torch.testing.assert_close(mine, ref, rtol=0, atol=1e-6)
    assert torch.allclose(mine.exp().sum(1), torch.ones(2, N, dtype=torch.float32), atol=1e-5)


def test_a_timestep_per_sample_equals_one_call_per_timestep(ours):
    """The transformer takes one t per sample (training draws them so): each sample's output is
    what a call with that sample alone and its t as the batch's timestep gives, and a 0-d t is the
    same as that t repeated for every sample."""
    model = ours.c.transformer
    cfg = model.cfg
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(cfg.num_classes, (3, cfg.num_tokens), generator=g)
    text = torch.nn.functional.normalize(torch.randn(3, 77, cfg.text_dim, generator=g), dim=-1)
    ts = torch.tensor([99, 37, 0])
    with torch.inference_mode():
        memory = model.text_memory(text)
        together = model(ids, ts, memory)
        for i, t in enumerate(ts.tolist()):
            alone = model(ids[i:i + 1], t, model.text_memory(text[i:i + 1]))
            torch.testing.assert_close(together[i:i + 1], alone, rtol=0, atol=1e-5)
        torch.testing.assert_close(model(ids, torch.tensor(37), memory), model(ids, torch.tensor([37, 37, 37]), memory), rtol=1e-5, atol=1e-5)
        logits = model.logits(ids, ts, memory)
    assert logits.shape == (3, cfg.num_tokens, cfg.num_classes - 1)
    torch.testing.assert_close(torch.log_softmax(logits.double(), dim=-1).float().permute(0, 2, 1), together, rtol=1e-5, atol=1e-5)


def test_schedule_tables_match_reference(ref_pipe):
    ours = NoiseSchedule(ScheduleConfig(num_classes=65))
    ref = ref_pipe.scheduler
    assert torch.equal(ours.log_att, ref.log_cumprod_at)
    assert torch.equal(ours.log_btt, ref.log_cumprod_bt)
    assert torch.equal(ours.log_ctt, ref.log_cumprod_ct)
    T = 100
    trs = ours.transitions(list(range(T)), [t - 1 for t in range(T)])
    assert torch.equal(torch.stack([tr.log_a for tr in trs]), ref.log_at)
    assert torch.equal(torch.stack([tr.log_b for tr in trs]), ref.log_bt)
    assert torch.equal(torch.stack([tr.log_c for tr in trs]), ref.log_ct)


@pytest.mark.parametrize("t", [99, 37, 1, 0])
def test_one_scheduler_step(ref_pipe, t):
    K, N, B = 65, 64, 2
    g = torch.Generator().manual_seed(100 + t)
    logp = torch.log_softmax(3 * torch.randn(B, K - 1, N, generator=g), dim=1)
    logp = ref_pipe.truncate(logp, 0.9).clamp(-70)
    # a partly masked x_t, as mid-chain
    x_t = torch.where(torch.rand(B, N, generator=g) < 0.5, torch.randint(0, K - 1, (B, N), generator=g), K - 1)
    ref = ref_pipe.scheduler.step(logp, t, x_t, generator=torch.Generator().manual_seed(5)).prev_sample
    schedule = NoiseSchedule(ScheduleConfig(num_classes=K))
    logits = logp if t == 0 else posterior_logits(logp, x_t, schedule.transitions([t], [t - 1])[0])
    if t > 0:
        torch.testing.assert_close(logits, ref_pipe.scheduler.q_posterior(logp, x_t, t), rtol=0, atol=0)
    # One generator for the batch in the reference = one draw of shape (B, K, N); ours draws per
    # image, which equals it for B = 1, so compare image by image.
    for b in range(B):
        ref_b = ref_pipe.scheduler.step(logp[b:b + 1], t, x_t[b:b + 1], generator=torch.Generator().manual_seed(5)).prev_sample
        mine_b = gumbel_sample(logits[b:b + 1], [torch.Generator().manual_seed(5)])
        assert torch.equal(mine_b, ref_b)
    assert ref.shape == (B, N)


def test_guidance_and_truncation(ref_pipe):
    g = torch.Generator().manual_seed(3)
    logp = torch.log_softmax(2 * torch.randn(4, 64, 64, generator=g), dim=1)
    uncond, cond = logp.chunk(2)
    expected = uncond + 5.0 * (cond - uncond)
    expected = expected - torch.logsumexp(expected, dim=1, keepdim=True)
    guided = apply_guidance(logp, 5.0)
    assert torch.equal(guided, expected)
    for rate in (1.0, 0.86, 0.3):
        assert torch.equal(truncate(guided, rate), ref_pipe.truncate(guided, rate).clamp(-70))
    # the top class always survives, and at a low rate few others do
    kept = truncate(guided, 0.3) > -70
    assert kept.any(dim=1).all()
    assert kept.sum(1).float().mean() < 0.5 * 64


def test_vqvae_decode(ours, ref_pipe):
    g = torch.Generator().manual_seed(9)
    tokens = torch.randint(0, 64, (2, 64), generator=g)
    with torch.inference_mode():
        emb = ref_pipe.vqvae.quantize.get_codebook_entry(tokens, shape=(2, 8, 8, 8))
        ref = ref_pipe.vqvae.decode(emb, force_not_quantize=True).sample
        mine = ours.c.vqvae.decode(tokens, 8, 8)
    torch.testing.assert_close(mine, ref, rtol=0, atol=1e-6)


def test_vqvae_encode_round_trip(ours, ref_pipe):
    """The encoder side (for editing) agrees with diffusers' encode + quantize."""
    g = torch.Generator().manual_seed(4)
    images = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    with torch.inference_mode():
        h = ref_pipe.vqvae.encode(images).latents
        _, _, (_, _, ref_ids) = ref_pipe.vqvae.quantize(h)
        mine = ours.c.vqvae.encode(images)
    assert torch.equal(mine.flatten(), ref_ids.flatten())
