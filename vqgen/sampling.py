"""One reverse step: guidance, truncation, the posterior q(x_s | x_t, x0) mixed over p(x0 | x_t), and
Gumbel-max sampling (SPEC sections 6-8).

Everything here runs in float32 whatever dtype the network uses, in the reference's order of
operations: a different but mathematically equal order would change the last bits, and with them,
now and then, a sampled token.

Shapes: B images, K classes including the mask (the last), N tokens.
log p(x0 | x_t) has K-1 rows (x0 is never the mask); the posterior over x_s has K rows.
"""

from __future__ import annotations

import torch

from .schedule import Transition

# log(1e-30): what the reference uses for "impossible" in a one-hot, instead of -inf.
LOG_EPS = 1e-30


def apply_guidance(logp: torch.Tensor, scale: float) -> torch.Tensor:
    """logp: (2B, K-1, N) as [uncond ; cond]. Returns (B, K-1, N) renormalised log-probabilities."""
    uncond, cond = logp.chunk(2)
    guided = uncond + scale * (cond - uncond)
    return guided - torch.logsumexp(guided, dim=1, keepdim=True)


def truncate(logp: torch.Tensor, rate: float) -> torch.Tensor:
    """Keep, per token, the most likely classes while their cumulative probability (before each) is
    below `rate`; always keep the top one. Dropped classes and anything below -70 become -70.

    The reference applies this even at rate 1.0, where float32 rounding can still drop a tail.
    The sort runs on a class-contiguous copy: about three times faster than sorting along the
    strided class dimension, with the same values, the same order (ties included) and the same
    sequential cumsum, hence the same mask.
    """
    rows = logp.transpose(1, 2).contiguous()  # (B, N, K-1)
    sorted_logp, order = torch.sort(rows, dim=-1, descending=True)
    below = torch.exp(sorted_logp).cumsum(dim=-1) < rate
    keep_sorted = torch.cat((torch.ones_like(below[..., :1]), below[..., :-1]), dim=-1)
    keep = torch.empty_like(keep_sorted).scatter_(-1, order, keep_sorted)
    return torch.where(keep.transpose(1, 2), logp, -torch.inf).clamp(min=-70)


def _log_onehot(x: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, N) ids -> (B, K, N) with 0 for the id and log(1e-30) elsewhere."""
    onehot = torch.nn.functional.one_hot(x, num_classes).permute(0, 2, 1)
    return torch.log(onehot.float().clamp(min=LOG_EPS))


def _log_q_xt_given(log_onehot_xt: torch.Tensor, is_mask: torch.Tensor, log_a, log_b, log_c, *, with_mask_row: bool):
    """log q(x_t | y) for every class y (rows), for the observed x_t of each token (columns).

    y real: a + b if y == x_t else b; every row is c where x_t is the mask.
    with_mask_row adds y = mask, which only ever leads to the mask (one-hot of x_t's mask row)."""
    log_q = (log_onehot_xt[:, :-1, :] + log_a).logaddexp(log_b)
    log_q = log_q.masked_fill(is_mask.unsqueeze(1), log_c)
    if with_mask_row:
        log_q = torch.cat((log_q, log_onehot_xt[:, -1:, :]), dim=1)
    return log_q


def posterior_logits(logp_x0: torch.Tensor, x_t: torch.Tensor, tr: Transition) -> torch.Tensor:
    """Unnormalised log p(x_s | x_t) = log sum_x0 q(x_s | x_t, x0) p(x0 | x_t), shape (B, K, N).

    With tr for s = t-1 this is the reference's q_posterior; for larger jumps it is the exact
    multi-step posterior (SPEC section 8)."""
    num_classes = logp_x0.shape[1] + 1
    log_onehot_xt = _log_onehot(x_t, num_classes)
    is_mask = x_t == num_classes - 1
    # q(x_t | x0): the cumulative corruption over the whole path.
    log_q_xt_x0 = _log_q_xt_given(log_onehot_xt, is_mask, tr.log_att_t, tr.log_btt_t, tr.log_ctt_t, with_mask_row=False)
    # q(x_t | x_s): the jump from s to t.
    log_q_xt_xs = _log_q_xt_given(log_onehot_xt, is_mask, tr.log_a, tr.log_b, tr.log_c, with_mask_row=True)

    q = logp_x0 - log_q_xt_x0
    q_lse = torch.logsumexp(q, dim=1, keepdim=True)
    q = q - q_lse
    # Forward from x0 to x_s: sum over x0 of q(x_s | x0) * q[x0].
    q = (q + tr.log_att_s).logaddexp(tr.log_btt_s)
    q = torch.cat((q, tr.log_ctt_s.expand(q.shape[0], 1, q.shape[2])), dim=1)
    return q + log_q_xt_xs + q_lse


def gumbel_sample(logits: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
    """argmax(logits + Gumbel noise) over classes. One generator per image: image i draws
    torch.rand of shape (1, K, N), exactly what a single-image reference run draws."""
    shape = (1,) + tuple(logits.shape[1:])
    uniform = torch.cat([torch.rand(shape, generator=g, device=logits.device) for g in generators])
    gumbel = -torch.log(-torch.log(uniform + LOG_EPS) + LOG_EPS)
    return (gumbel + logits).argmax(dim=1)


def purity_step(logp_x0: torch.Tensor, x_t: torch.Tensor, keep_masked: list[float], weight: float,
                generators: list[torch.Generator]) -> torch.Tensor:
    """Purity-prior sampling (Tang et al. 2022, SPEC section 9): unmask the positions whose
    prediction is most certain, more often, instead of uniformly at random.

    logp_x0 (B, K-1, N) after guidance and truncation; x_t (B, N); keep_masked[b]: the fraction of
    image b's masked positions that stay masked after this step (ctt[s]/ctt[t], as the posterior
    sampler keeps on average). Positions to open are drawn without replacement with probability
    proportional to purity (Gumbel-top-k), and their tokens from softmax((1 + weight * purity) * logp).
    Already open tokens never change. Per image: one draw of N uniforms for positions, then one of
    (K-1, N) for tokens, from that image's generator."""
    B, K1, N = logp_x0.shape
    mask_id = K1
    purity = logp_x0.exp().amax(dim=1)  # (B, N): the most likely class's probability
    purity = purity / purity.amax(dim=1, keepdim=True)
    masked = x_t == mask_id
    out = x_t.clone()
    for b, g in enumerate(generators):
        m = int(masked[b].sum())
        n_open = m - int(round(m * keep_masked[b])) if m else 0
        u_pos = torch.rand((N,), generator=g, device=x_t.device)
        u_tok = torch.rand((K1, N), generator=g, device=x_t.device)
        if n_open == 0:
            continue
        keys = torch.log(purity[b]) - torch.log(-torch.log(u_pos + LOG_EPS) + LOG_EPS)
        keys = keys.masked_fill(~masked[b], -torch.inf)
        chosen = keys.topk(n_open).indices
        sharpened = (1 + weight * purity[b]) * logp_x0[b]  # (K-1, N)
        tokens = (sharpened - torch.log(-torch.log(u_tok + LOG_EPS) + LOG_EPS)).argmax(dim=0)
        out[b, chosen] = tokens[chosen]
    return out
