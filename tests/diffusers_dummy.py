"""diffusers' own VQ-Diffusion test components, built the way its fast tests build them.

diffusers v0.24's tests/pipelines/vq_diffusion/test_vq_diffusion.py runs VQDiffusionPipeline on
dummy components that differ from tests/tiny_checkpoint.py in exactly the ways a loader must
tolerate (issue 13):

- the transformer is built without norm_type, so save_pretrained writes diffusers' legacy
  spelling "norm_type": "layer_norm" next to "num_embeds_ada_norm";
- the VQ-VAE has 12 codes and the transformer 12 classes (11 codes + the mask): one code is
  never predicted;
- the transformer's timestep embedding has 12 rows but the scheduler 100 timesteps, so only the
  last 12 steps of the chain can be run.

The sizes and arguments below are that test's; each module is built right after
torch.manual_seed(0), as there, so its weights are the library's own initialisation. The one
change: that test downloads hf-internal-testing/tiny-random-clip as its tokenizer; here the
offline tiny CLIP tokenizer of tiny_checkpoint.py stands in (its ids are all below the text
encoder's vocabulary of 1000).
"""

from __future__ import annotations

from pathlib import Path

import torch

try:
    from . import tiny_checkpoint as tc
except ImportError:  # tests/ is not a package: pytest puts it on sys.path
    import tiny_checkpoint as tc

NUM_EMBED = 12  # VQ codes, and transformer classes (11 codes + mask)
NUM_EMBEDS_ADA_NORM = 12  # rows of the transformer's timestep embedding
SCHEDULER_TIMESTEPS = 100  # VQDiffusionScheduler's default num_train_timesteps
TEXT_WIDTH = 32
SIDE = 12  # latent side; images are 24 x 24
PROMPT = "teddy bear playing in the pool"  # the test's prompt


def _vqvae():
    from diffusers import VQModel

    torch.manual_seed(0)
    return VQModel(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=3,
        num_vq_embeddings=NUM_EMBED,
        vq_embed_dim=3,
    ).eval()


def _text_encoder():
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    config = CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=2,
        hidden_size=TEXT_WIDTH,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=5,
        pad_token_id=1,
        vocab_size=1000,
    )
    return CLIPTextModel(config).eval()


def _transformer():
    from diffusers import Transformer2DModel

    torch.manual_seed(0)
    # No norm_type: diffusers infers ada_norm from num_embeds_ada_norm and records "layer_norm".
    return Transformer2DModel(
        attention_bias=True,
        cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=SIDE * SIDE,
        num_attention_heads=1,
        num_vector_embeds=NUM_EMBED,
        num_embeds_ada_norm=NUM_EMBEDS_ADA_NORM,
        norm_num_groups=32,
        sample_size=SIDE,
        activation_fn="geglu-approximate",
    ).eval()


def build_dummy_pipeline(learnable: bool):
    """The test's VQDiffusionPipeline: learnable=False is its test_vq_diffusion, learnable=True its
    test_vq_diffusion_classifier_free_sampling (a learned null of zeros, 77 x 32)."""
    from diffusers import VQDiffusionPipeline, VQDiffusionScheduler

    vqvae = _vqvae()
    text_encoder = _text_encoder()
    tokenizer = tc.load_tiny_tokenizer()
    transformer = _transformer()
    null_cls = tc._learned_embeddings_class()
    if learnable:
        null = null_cls(learnable=True, hidden_size=TEXT_WIDTH, length=tokenizer.model_max_length)
    else:
        null = null_cls(learnable=False)
    pipe = VQDiffusionPipeline(
        vqvae=vqvae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        scheduler=VQDiffusionScheduler(NUM_EMBED),
        learned_classifier_free_sampling_embeddings=null.eval(),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_dummy_pipeline(pipe, folder: Path) -> Path:
    """save_pretrained, as a user of diffusers would write these components."""
    folder = Path(folder)
    pipe.save_pretrained(folder)
    return folder
