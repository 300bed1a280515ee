"""The bundled shapes model: shipped as package data, loaded by vqgen and by diffusers (same
images), judged right; and the training code that made it (tiny smoke configuration)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from vqgen.bundled import BUNDLED, bundled_model_path
from vqgen.demo import shapes
from vqgen.demo.judge import judge, score

FOLDER = bundled_model_path("shapes")

FILES = [
    "model_index.json",
    "learned_classifier_free_sampling_embeddings/config.json",
    "learned_classifier_free_sampling_embeddings/diffusion_pytorch_model.fp16.safetensors",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder/model.fp16.safetensors",
    "tokenizer/merges.txt",
    "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer_config.json",
    "tokenizer/vocab.json",
    "transformer/config.json",
    "transformer/diffusion_pytorch_model.fp16.safetensors",
    "vqvae/config.json",
    "vqvae/diffusion_pytorch_model.fp16.safetensors",
]


@pytest.fixture(scope="module")
def pipe():
    from vqgen.pipeline import Pipeline

    return Pipeline.from_folder(FOLDER, device="cpu", dtype="float32", exact=True)


# ---------------------------------------------------------------------------------------------
# Package data
# ---------------------------------------------------------------------------------------------


def test_bundled_model_is_package_data():
    assert FOLDER is not None and FOLDER == BUNDLED["shapes"]
    for rel in FILES:
        assert (FOLDER / rel).is_file(), rel
    size = sum(p.stat().st_size for p in FOLDER.rglob("*") if p.is_file())
    assert size < 12 * 2**20, f"the bundled model is {size / 2**20:.1f} MB"
    assert bundled_model_path("no-such-model") is None
    # setuptools ships it: the package-data glob of pyproject.toml matches every file.
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    assert '"models/shapes/**/*"' in pyproject


def test_configs_match_the_published_layout():
    index = json.loads((FOLDER / "model_index.json").read_text())
    assert index["_class_name"] == "VQDiffusionPipeline"
    t = json.loads((FOLDER / "transformer/config.json").read_text())
    assert (t["norm_type"], t["activation_fn"], t["attention_bias"], t["num_embeds_ada_norm"]) == ("ada_norm", "geglu-approximate", True, 100)
    s = json.loads((FOLDER / "scheduler/scheduler_config.json").read_text())
    assert s["num_train_timesteps"] == 100 and s["num_vec_classes"] == t["num_vector_embeds"]
    tok = json.loads((FOLDER / "tokenizer/tokenizer_config.json").read_text())
    assert tok["model_max_length"] == 77 and tok["pad_token"] == "!"


def test_every_caption_word_is_one_token(pipe):
    tokenizer = pipe.c.text_encoder.tokenizer
    assert tokenizer.convert_tokens_to_ids("!") == 0  # pad "!" = id 0, as ITHQ
    for word in ("red", "purple", "triangle", "circle", "square", "top", "left", "center", "located"):
        assert len(tokenizer(word).input_ids) == 3, word  # BOS word EOS
    ids = tokenizer("a red circle", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77 and ids[-1] == 0


# ---------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------

SEEN = [
    ("red", "circle", "top left"),
    ("blue", "square", "center"),
    ("green", "triangle", "bottom right"),
    ("yellow", "circle", "top right"),
    ("orange", "triangle", "bottom left"),
    ("purple", "square", "top left"),
]


def test_generates_judged_correct_images(pipe):
    """Most images are right (the bench measures about 95% on seen combinations; here 18 images,
    so allow a few misses rather than pin particular seeds)."""
    from vqgen.pipeline import Settings

    jobs = [(c, seed) for seed in range(3) for c in SEEN]
    gen = pipe.generate([shapes.canonical_caption(*c) for c, _ in jobs], [s for _, s in jobs], Settings(steps=50, guidance=1.0))
    assert gen.images[0].size == (64, 64)
    verdicts = [judge(image) for image in gen.images]
    right = sum(score(c, v) for (c, _), v in zip(jobs, verdicts))
    assert right >= 15, [(c, (v.color, v.shape, v.position)) for (c, _), v in zip(jobs, verdicts)]


def test_diffusers_loads_the_folder_and_makes_the_same_image(pipe):
    pytest.importorskip("diffusers")
    from diffusers import Transformer2DModel, VQDiffusionPipeline, VQDiffusionScheduler, VQModel
    from safetensors.torch import load_file
    from transformers import CLIPTextModel, CLIPTokenizer

    from tiny_checkpoint import _learned_embeddings_class

    folder = str(FOLDER)
    fp16 = dict(variant="fp16", torch_dtype=torch.float32)
    vqvae = VQModel.from_pretrained(folder, subfolder="vqvae", **fp16).eval()
    transformer = Transformer2DModel.from_pretrained(folder, subfolder="transformer", **fp16).eval()
    # Every weight diffusers expects is in the files, and nothing else: no silently random layer.
    for module, sub in ((vqvae, "vqvae"), (transformer, "transformer")):
        stored = load_file(str(FOLDER / sub / "diffusion_pytorch_model.fp16.safetensors"))
        assert set(stored) == set(module.state_dict()), sub
    ref = VQDiffusionPipeline(
        vqvae=vqvae,
        text_encoder=CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", variant="fp16", dtype=torch.float32).eval(),
        tokenizer=CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer"),
        transformer=transformer,
        scheduler=VQDiffusionScheduler.from_pretrained(folder, subfolder="scheduler"),
        learned_classifier_free_sampling_embeddings=_learned_embeddings_class().from_pretrained(
            folder, subfolder="learned_classifier_free_sampling_embeddings", **fp16).eval(),
    )
    ref.set_progress_bar_config(disable=True)
    prompt, seed = "a blue square in the center", 3
    out = ref(prompt, num_inference_steps=100, guidance_scale=3.0, truncation_rate=1.0,
              generator=torch.Generator().manual_seed(seed), output_type="np")
    expected = (out.images[0] * 255).round().astype(np.uint8)
    ours = np.asarray(pipe(prompt, seed=seed, steps=100, guidance=3.0, truncation=1.0).images[0])
    assert np.array_equal(ours, expected)
    assert score(("blue", "square", "center"), judge(ours))


# ---------------------------------------------------------------------------------------------
# Training code
# ---------------------------------------------------------------------------------------------


def test_training_is_deterministic_and_exports_a_loadable_folder(tmp_path):
    from vqgen.demo.train import SMOKE, save, train
    from vqgen.pipeline import Pipeline

    a = train(SMOKE, quiet=True)
    b = train(SMOKE, quiet=True)
    for ma, mb in ((a.transformer, b.transformer), (a.vqvae, b.vqvae), (a.text_model, b.text_model)):
        sa, sb = ma.state_dict(), mb.state_dict()
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert torch.equal(a.null, b.null)
    c = train(replace(SMOKE, seed=SMOKE.seed + 1), quiet=True)
    assert not torch.equal(a.transformer.head.weight, c.transformer.head.weight)

    folder = save(a, tmp_path / "model")
    loaded = Pipeline.from_folder(folder, device="cpu", dtype="float32", exact=True)
    for key, value in a.transformer.state_dict().items():
        assert torch.equal(loaded.c.transformer.state_dict()[key], value.half().float()), key
    assert loaded("a red circle in the top left", seed=0, steps=3).images[0].size == (64, 64)


def test_x0_loss_trains_corrupted_and_visible_positions_as_two_means():
    import torch.nn.functional as F

    from vqgen.demo.train import x0_loss

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 10, 7, generator=g)
    x0 = torch.randint(7, (3, 10), generator=g)
    corrupt = torch.rand(3, 10, generator=g) < 0.4
    flat = logits.reshape(-1, 7)
    on_corrupt = F.cross_entropy(flat, torch.where(corrupt, x0, -100).reshape(-1), ignore_index=-100)
    on_visible = F.cross_entropy(flat, torch.where(corrupt, -100, x0).reshape(-1), ignore_index=-100)
    assert torch.allclose(x0_loss(logits, x0, corrupt, 0.0), on_corrupt, atol=1e-6)
    assert torch.allclose(x0_loss(logits, x0, corrupt, 0.5), on_corrupt + 0.5 * on_visible, atol=1e-6)


def test_the_last_step_keeps_the_tokens_already_drawn(pipe):
    """The final step redraws every position from p(x0 | x_1), as the reference does; the bundled
    model was trained to give visible tokens back, so a finished image is not re-rolled there."""
    from vqgen.sampling import gumbel_sample, posterior_logits, truncate
    from vqgen.schedule import timesteps_for

    c = pipe.c
    combos = shapes.seen_combinations()[::4]
    memory = c.transformer.text_memory(c.text_encoder.encode([shapes.canonical_caption(*x) for x in combos]).embeddings)
    ts = timesteps_for("strided", pipe.num_timesteps, 25)
    steps = c.schedule.transitions(ts, ts[1:] + [-1])
    gens = [torch.Generator().manual_seed(i) for i in range(len(combos))]
    x = torch.full((len(combos), c.transformer.cfg.num_tokens), c.transformer.cfg.mask_id)
    with torch.inference_mode():
        for t, step in zip(ts[:-1], steps):
            x = gumbel_sample(posterior_logits(truncate(c.transformer(x, torch.tensor(t), memory), 1.0), x, step), gens)
        open_ = x != c.transformer.cfg.mask_id
        last = gumbel_sample(truncate(c.transformer(x, torch.tensor(0), memory), 1.0), gens)
    assert open_.float().mean() > 0.99
    assert (last == x)[open_].float().mean() > 0.995


def test_train_demo_command(tmp_path):
    from vqgen.cli import main

    out = tmp_path / "smoke"
    assert main(["train-demo", str(out), "--smoke"]) == 0
    assert (out / "model_index.json").is_file()
    assert main(["train-demo", str(out), "--smoke"]) != 0  # refuses a non-empty folder


def test_bundled_model_brings_its_own_defaults(tmp_path, capsys):
    """`--model shapes` runs with the settings its quality table supports (25 strided steps, no
    guidance) unless the command line says otherwise; the image records what was used."""
    import json

    from PIL import Image

    from vqgen.bundled import BUNDLED
    from vqgen.cli import main
    from vqgen.settings import model_recommended

    RECOMMENDED_SETTINGS = {"shapes": model_recommended(BUNDLED["shapes"])}
    assert RECOMMENDED_SETTINGS["shapes"] == {"steps": 25, "guidance": 1.0, "truncation": 0.86, "schedule": "strided"}

    assert main(["a red circle in the top left", "--model", "shapes", "-o", str(tmp_path / "a.png"), "--seed", "3", "-q"]) == 0
    record = json.loads(Image.open(tmp_path / "a.png").text["vqgen"])
    for key, value in RECOMMENDED_SETTINGS["shapes"].items():
        assert record[key] == value
    assert main(["a red circle in the top left", "--model", "shapes", "-o", str(tmp_path / "b.png"), "--seed", "3",
                 "--guidance", "3", "-q"]) == 0
    record = json.loads(Image.open(tmp_path / "b.png").text["vqgen"])
    assert record["guidance"] == 3.0 and record["steps"] == RECOMMENDED_SETTINGS["shapes"]["steps"]
    capsys.readouterr()
