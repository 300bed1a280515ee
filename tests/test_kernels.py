"""The kernel modes (vqgen.kernels): what each device gets, the fast Linear layers against exact
arithmetic, and the user's mistakes as one line."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vqgen import fast_layers, kernels
from vqgen.cli import main
from vqgen.errors import UsageError
from vqgen.fast_layers import FeedForward, Int8Linear, PackedLinear, QuantLinear, SelfAttention, TimestepNorm
from vqgen.kernels import plan_for
from vqgen.pipeline import Pipeline, Settings

CPU = torch.device("cpu")
ZEN5 = {"vendor": "AuthenticAMD", "capability": "AVX512", "avx512_bf16": True, "amx": False, "vnni": True, "onednn": True, "onednn_bf16": True}
ZEN3 = {"vendor": "AuthenticAMD", "capability": "AVX2", "avx512_bf16": False, "amx": False, "vnni": False, "onednn": True, "onednn_bf16": False}
SAPPHIRE = {"vendor": "GenuineIntel", "capability": "AVX512", "avx512_bf16": True, "amx": True, "vnni": True, "onednn": True, "onednn_bf16": True}
SKYLAKE = {"vendor": "GenuineIntel", "capability": "AVX512", "avx512_bf16": False, "amx": False, "vnni": False, "onednn": True, "onednn_bf16": True}


@pytest.fixture
def cpu_is(monkeypatch):
    def set_features(features: dict) -> None:
        monkeypatch.setattr(kernels, "cpu_features", lambda: features)

    return set_features


@pytest.mark.parametrize("features, block, linear", [
    (ZEN5, torch.bfloat16, "onednn"),  # bf16 units: the transformer in bfloat16, weights packed for oneDNN
    (SAPPHIRE, torch.bfloat16, "onednn"),  # AMX counts as bf16 units
    (ZEN3, torch.float32, "onednn"),  # no bf16 units, AMD: fp32 through oneDNN (MKL has no AVX-512 path there)
    (SKYLAKE, torch.float32, "torch"),  # no bf16 units, Intel: MKL's sgemm
])
def test_the_default_follows_the_cpu(cpu_is, features, block, linear):
    cpu_is(features)
    plan = plan_for(CPU, None)
    assert (plan.transformer_dtype, plan.linear, plan.dtype, plan.exact) == (block, linear, torch.float32, False)
    assert plan.warnings == ()


@pytest.mark.parametrize("features", [ZEN5, ZEN3])
def test_exact_is_the_requested_dtype_everywhere(cpu_is, features):
    cpu_is(features)
    plan = plan_for(CPU, None, exact=True)
    assert (plan.dtype, plan.transformer_dtype, plan.linear, plan.mode) == (torch.float32, torch.float32, "torch", "exact")
    plan = plan_for(CPU, torch.float16, exact=True)
    assert (plan.dtype, plan.transformer_dtype) == (torch.float16, torch.float16)


def test_gpu_default_is_half_precision_and_int8_is_cpu_only():
    plan = plan_for(torch.device("cuda"), None)
    assert (plan.dtype, plan.transformer_dtype, plan.linear) == (torch.float16, torch.float16, "torch")
    with pytest.raises(UsageError, match="CPU only"):
        plan_for(torch.device("cuda"), None, quantize="int8")


def test_int8_keeps_bf16_between_layers_only_where_the_cpu_has_it(cpu_is):
    cpu_is(ZEN5)
    assert plan_for(CPU, None, quantize="int8").transformer_dtype == torch.bfloat16
    cpu_is(ZEN3)
    assert plan_for(CPU, None, quantize="int8").transformer_dtype == torch.float32


def test_bfloat16_on_a_cpu_without_bf16_units_warns(cpu_is):
    cpu_is(ZEN3)
    plan = plan_for(CPU, torch.bfloat16)
    (warning,) = plan.warnings
    assert "slower than float32" in warning
    assert plan.linear == "torch"  # oneDNN cannot pack bf16 weights without avx512bw/vl/dq: torch's own GEMM
    cpu_is(ZEN5)
    assert plan_for(CPU, torch.bfloat16).warnings == ()


def test_mode_mistakes():
    with pytest.raises(UsageError, match="exclude each other"):
        plan_for(CPU, None, exact=True, quantize="int8")
    with pytest.raises(UsageError, match="unknown quantization 'int4'; use one of int8"):
        plan_for(CPU, None, quantize="int4")


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
def test_packed_linear_is_the_linear_and_fuses_swish(dtype, tol):
    if dtype == torch.bfloat16 and not kernels.cpu_features()["onednn_bf16"]:
        pytest.skip("this CPU has no oneDNN bfloat16 GEMM (needs avx512bw/vl/dq or avx_ne_convert); plan_for never packs bf16 here")
    torch.manual_seed(0)
    linear = nn.Linear(96, 160)
    x = torch.randn(2, 50, 96)
    packed = PackedLinear.from_float(linear.weight.detach(), linear.bias.detach(), dtype, 100)
    swish = PackedLinear.from_float(linear.weight.detach(), linear.bias.detach(), dtype, 100, post="swish")
    with torch.inference_mode():
        ref, got, got_swish = linear(x), packed(x.to(dtype)), swish(x.to(dtype))
    assert got.shape == ref.shape and got.dtype == dtype
    torch.testing.assert_close(got.float(), ref, rtol=tol, atol=tol)
    torch.testing.assert_close(got_swish.float(), F.silu(ref), rtol=tol, atol=tol)


def _int8_layers():
    layers = [Int8Linear.from_float]
    if fast_layers.onednn_int8_available():
        layers += [QuantLinear.from_float, functools.partial(QuantLinear.from_float, levels=63)]  # 63: a CPU without VNNI
    return layers


@pytest.mark.parametrize("layer", _int8_layers())
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_linear_is_close_a_quarter_of_the_weight_and_batch_invariant(layer, dtype):
    torch.manual_seed(0)
    linear = nn.Linear(128, 256)
    x = torch.randn(3, 40, 128)
    q = layer(linear.weight.detach(), linear.bias.detach(), dtype)
    with torch.inference_mode():
        ref, got = linear(x), q(x.to(dtype))
        alone = q(x[1:2].to(dtype))
    assert got.dtype == dtype and got.shape == ref.shape
    rel = (got.float() - ref).norm() / ref.norm()
    assert rel < 0.02, rel  # 8-bit weights and activations: about 1% error
    # A sample's result never depends on the rest of the batch (guided [uncond ; cond], -n 4).
    assert torch.equal(alone[0], got[1])
    w = q.weight_t if isinstance(q, Int8Linear) else q.weight
    assert w.dtype == torch.int8 and 4 * w.numel() * w.element_size() == linear.weight.numel() * linear.weight.element_size()
    # A sample that is all zeros stays finite (its scale is clamped, not zero).
    assert torch.isfinite(q(torch.zeros(1, 128).to(dtype))).all()


@pytest.mark.parametrize("kind", ["packed", "int8"])
def test_fused_attention_and_feed_forward_compute_the_blocks_maths(kind):
    """One q/k/v GEMM, and the feed-forward's 1.702 folded into swish: the same functions."""
    from vqgen.transformer import Attention
    from vqgen.transformer import FeedForward as ReferenceFF

    torch.manual_seed(0)
    attn, ff = Attention(64, 4, 16, 64), ReferenceFF(64, 256)
    if kind == "packed":
        make, tol = (lambda w, b, post="none": PackedLinear.from_float(w.detach(), b.detach(), torch.float32, 64, post)), 1e-5
    else:
        layer = QuantLinear if fast_layers.onednn_int8_available() else Int8Linear
        make, tol = (lambda w, b, post="none": layer.from_float(w.detach(), b.detach(), torch.float32, post)), 5e-2
    x = torch.randn(2, 30, 64)
    (up_w, up_b), (down_w, down_b) = fast_layers.feed_forward_weights(ff)
    fused_attn = SelfAttention(make(*fast_layers.q_k_v_weights(attn)), make(attn.out.weight, attn.out.bias), attn.num_heads, attn.head_dim)
    fused_ff = FeedForward(make(up_w, up_b, post="swish"), make(down_w, down_b))
    with torch.inference_mode():
        for ref_module, fused in ((attn, fused_attn), (ff, fused_ff)):
            ref, got = ref_module(x), fused(x)
            assert ((got - ref).norm() / ref.norm()) < tol


def test_timestep_norm_is_the_ada_layer_norm():
    """The table holds what AdaLayerNorm computes, for one t per batch and one t per sample."""
    from vqgen.transformer import AdaLayerNorm

    torch.manual_seed(0)
    norm = AdaLayerNorm(64, 12)
    for p in norm.parameters():
        nn.init.normal_(p, std=0.5)  # else the projection starts near zero and the test could not fail
    x = torch.randn(3, 20, 64)
    table = TimestepNorm(fast_layers.timestep_table(norm))
    with torch.inference_mode():
        for t in (torch.tensor(11), torch.tensor([0, 5, 11])):
            ref = norm(x, t)
            torch.testing.assert_close(table(x, t), ref, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(table(x, torch.tensor(1)), table(x, torch.tensor(2)))
    assert [n for n, _ in table.named_parameters()] == []  # nothing of the embedding or projection is kept


@pytest.fixture(scope="module")
def exact_pipe(diffusers_folder):
    return Pipeline.from_folder(diffusers_folder, device="cpu", exact=True)


@pytest.mark.parametrize("mode", [dict(), dict(dtype="float32"), dict(quantize="int8")])
def test_fast_modes_stay_close_to_exact(exact_pipe, diffusers_folder, mode):
    """Each fast mode on the same inputs: log p(x0 | x_t) within a small KL of exact's, and the
    kernels it says it runs are the ones in the module tree."""
    pipe = Pipeline.from_folder(diffusers_folder, device="cpu", **mode)
    plan = pipe.plan
    block = pipe.c.transformer.blocks[0]
    swapped = [block.attn2.q, block.attn2.out, block.ff.up, block.ff.down] + [getattr(block.attn1, n) for n in ("q", "qkv") if hasattr(block.attn1, n)]
    int8 = QuantLinear if fast_layers.onednn_int8_available() else Int8Linear
    expected = {"torch": nn.Linear, "onednn": PackedLinear, "int8": int8}[plan.linear]
    assert {type(m) for m in swapped} == {expected}
    assert isinstance(block.attn2.k, nn.Linear)  # run once per generation, on the text
    assert type(block.norm1) is type(block.norm2) is TimestepNorm  # tables: the embeddings and projections are gone
    assert pipe.c.transformer.head.weight.dtype == torch.float32  # the logits stay float32 in every mode
    # Only the GEMMs run narrow: the residual stream (embeddings, norms, timestep tables) is float32.
    transformer = pipe.c.transformer
    assert {transformer.token_embedding.weight.dtype, block.norm3.weight.dtype, block.norm1.table.dtype} == {torch.float32}
    assert block.attn2.k.weight.dtype == plan.transformer_dtype  # the text's keys and values meet q in attention
    with torch.inference_mode():
        text, _ = exact_pipe.encode_prompts(["a red bus"], guided=True)
        torch.manual_seed(1)
        cfg = pipe.c.transformer.cfg
        x = torch.randint(0, cfg.num_classes, (2, cfg.num_tokens))
        t = torch.tensor(40)
        ref = exact_pipe.c.transformer(x, t, exact_pipe.c.transformer.text_memory(text))
        got = pipe.c.transformer(x, t, pipe.c.transformer.text_memory(text))
    kl = (ref.exp() * (ref - got)).sum(1).mean()
    assert got.dtype == torch.float32 and -1e-6 < kl < 2e-2, kl  # float32 rounding can make a zero KL -1e-9


def test_fast_mode_images_are_reproducible_and_batch_invariant(diffusers_folder):
    pipe = Pipeline.from_folder(diffusers_folder, device="cpu")
    s = Settings(steps=10, guidance=5.0)
    a = pipe.generate(["a red bus", "a cat"], [3, 4], s)
    b = pipe.generate(["a cat"], [4], s)
    import numpy as np

    assert np.array_equal(np.asarray(a.images[1]), np.asarray(b.images[0]))


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("args, message", [
    (["--exact", "--quantize", "int8"], "exclude each other"),
    (["--quantize", "int4"], "unknown quantization 'int4'"),
])
def test_cli_mode_mistakes_are_one_line(capsys, tmp_path, diffusers_folder, args, message):
    code, out, err = run(capsys, "a red bus", "-m", diffusers_folder, "-o", tmp_path / "a.png", *args)
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "a.png").exists()


def test_cli_verbose_says_what_runs_and_warns_about_slow_bf16(capsys, tmp_path, diffusers_folder, cpu_is):
    cpu_is(ZEN3)
    code, out, err = run(capsys, "a red bus", "-m", diffusers_folder, "-o", tmp_path / "a.png", "--steps", 2,
                         "--dtype", "bfloat16", "-v")
    assert code == 0, err
    assert "kernels: fast: transformer bfloat16" in err and "AVX2" in err
    assert "warning: bfloat16 on this CPU" in err and "slower than float32" in err
