"""The kernel modes (vqgen.kernels): what each device gets, the fast Linear layers against exact
arithmetic, and the user's mistakes as one line."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vqgen import kernels
from vqgen.cli import main
from vqgen.errors import UsageError
from vqgen.kernels import Int8Linear, OneDNNLinear, plan_for
from vqgen.pipeline import Pipeline, Settings

CPU = torch.device("cpu")
ZEN5 = {"vendor": "AuthenticAMD", "capability": "AVX512", "avx512_bf16": True, "amx": False, "vnni": True, "onednn": True}
ZEN3 = {"vendor": "AuthenticAMD", "capability": "AVX2", "avx512_bf16": False, "amx": False, "vnni": False, "onednn": True}
SAPPHIRE = {"vendor": "GenuineIntel", "capability": "AVX512", "avx512_bf16": True, "amx": True, "vnni": True, "onednn": True}
SKYLAKE = {"vendor": "GenuineIntel", "capability": "AVX512", "avx512_bf16": False, "amx": False, "vnni": False, "onednn": True}


@pytest.fixture
def cpu_is(monkeypatch):
    def set_features(features: dict) -> None:
        monkeypatch.setattr(kernels, "cpu_features", lambda: features)

    return set_features


@pytest.mark.parametrize("features, block, linear", [
    (ZEN5, torch.bfloat16, "torch"),  # bf16 units: the transformer in bfloat16
    (SAPPHIRE, torch.bfloat16, "torch"),  # AMX counts as bf16 units
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
    (warning,) = plan_for(CPU, torch.bfloat16).warnings
    assert "slower than float32" in warning
    cpu_is(ZEN5)
    assert plan_for(CPU, torch.bfloat16).warnings == ()


def test_mode_mistakes():
    with pytest.raises(UsageError, match="exclude each other"):
        plan_for(CPU, None, exact=True, quantize="int8")
    with pytest.raises(UsageError, match="unknown quantization 'int4'; use one of int8"):
        plan_for(CPU, None, quantize="int4")


def test_onednn_linear_is_float32_arithmetic():
    torch.manual_seed(0)
    linear = nn.Linear(96, 160)
    x = torch.randn(2, 50, 96)
    with torch.inference_mode():
        ref, got = linear(x), OneDNNLinear(linear, 100)(x)
    assert got.shape == ref.shape and got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_linear_is_close_and_a_quarter_of_the_weight(dtype):
    torch.manual_seed(0)
    linear = nn.Linear(128, 256)
    x = torch.randn(3, 40, 128)
    q = Int8Linear(linear)
    with torch.inference_mode():
        ref, got = linear(x), q(x.to(dtype))
    assert got.dtype == dtype and got.shape == ref.shape
    rel = (got.float() - ref).norm() / ref.norm()
    assert rel < 0.02, rel  # 127 levels per token and per channel: about 1% error
    w = q.weight_t
    assert w.dtype == torch.int8 and 4 * w.numel() * w.element_size() == linear.weight.numel() * linear.weight.element_size()
    # A token that is all zeros stays finite (its scale is clamped, not zero).
    assert torch.isfinite(q(torch.zeros(1, 128))).all()


@pytest.fixture(scope="module")
def exact_pipe(diffusers_folder):
    return Pipeline.from_folder(diffusers_folder, device="cpu", exact=True)


@pytest.mark.parametrize("mode", [dict(), dict(dtype="float32"), dict(quantize="int8")])
def test_fast_modes_stay_close_to_exact(exact_pipe, diffusers_folder, mode):
    """Each fast mode on the same inputs: log p(x0 | x_t) within a small KL of exact's, and the
    kernels it says it runs are the ones in the module tree."""
    pipe = Pipeline.from_folder(diffusers_folder, device="cpu", **mode)
    plan = pipe.plan
    linears = [m for m in pipe.c.transformer.blocks.modules() if isinstance(m, (nn.Linear, OneDNNLinear, Int8Linear))]
    kinds = {type(m) for m in linears if not isinstance(m, nn.Linear) or m.out_features != 2 * pipe.c.transformer.cfg.dim}
    expected = {"torch": nn.Linear, "onednn": OneDNNLinear, "int8": Int8Linear}[plan.linear]
    assert kinds == {expected}
    assert pipe.c.transformer.head.weight.dtype == torch.float32  # the logits stay float32 in every mode
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
