"""Text -> image: the generation loop over the loaded components.

    pipe = vqgen.load("path/or/repo-id")
    result = pipe("a red bus", seed=42, num_images=2)   # result.images: PIL images, result.seeds

Image i of a call uses seed + i and its own random generator, so every image can be reproduced
alone and equals what the reference makes for that seed with batch size one.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from . import defaults
from .device import resolve_device, resolve_dtype
from .errors import UsageError
from .hub import ResolvedModel
from .kernels import Plan, plan_for
from .loader import Components, load_components
from .sampling import apply_guidance, gumbel_sample, posterior_logits, purity_step, truncate
from .schedule import SCHEDULES, Chain, timesteps_for, timesteps_from
from .vqvae import to_uint8

SAMPLERS = ("posterior", "purity")
StepCallback = Callable[[int, int], None]  # (steps done, total steps)


@dataclass
class Settings:
    """What decides an image besides the prompt and the seed. Defaults live in defaults.py."""

    steps: int | None = defaults.STEPS
    guidance: float = defaults.GUIDANCE
    truncation: float = defaults.TRUNCATION
    schedule: str = defaults.SCHEDULE
    sampler: str = defaults.SAMPLER
    purity_weight: float = defaults.PURITY_WEIGHT

    def validate(self, chain: Chain | int | None) -> None:
        """One-line UsageErrors for values no model accepts; with the model's usable chain known
        (a Chain, or its length), also for steps beyond it."""
        if isinstance(chain, int):
            chain = Chain(chain, chain)
        if self.steps is not None and self.steps < 1:
            raise UsageError(f"--steps {self.steps} is out of range; use at least 1 (the model's chain length at most)")
        if self.steps is not None and chain is not None and self.steps > chain.length:
            raise UsageError(f"--steps {self.steps} is out of range: {chain.describe()}; use 1..{chain.length}")
        if not 0 < self.truncation <= 1:
            raise UsageError(f"--truncation {self.truncation} is out of range; use a value in (0, 1], e.g. 0.86 or 1.0")
        if not self.guidance >= 0:
            raise UsageError(f"--guidance {self.guidance} is negative; use 0 or more (1 turns guidance off, 5 is the default)")
        if self.schedule not in SCHEDULES:
            raise UsageError(f"unknown schedule {self.schedule!r}; use one of {', '.join(SCHEDULES)}")
        if self.sampler not in SAMPLERS:
            raise UsageError(f"unknown sampler {self.sampler!r}; use one of {', '.join(SAMPLERS)}")
        if not self.purity_weight >= 0:
            raise UsageError(f"--purity-weight {self.purity_weight} is negative; use 0 or more (1 is the published choice)")


def random_seed() -> int:
    return secrets.randbits(32)


@dataclass
class Generation:
    images: list  # PIL images
    seeds: list[int]
    prompts: list[str]
    settings: Settings
    timesteps: list[int]
    warnings: list[str] = field(default_factory=list)
    edits: list | None = None  # for an edit: one editing.EditInfo per image


class Pipeline:
    def __init__(self, components: Components, plan: Plan, model: ResolvedModel):
        self.c, self.plan, self.model = components, plan, model
        self.device = plan.device
        self.dtype = plan.transformer_dtype  # what the network runs in; the sampler is float32
        self.warnings = list(plan.warnings)  # about the setup (a slow dtype, ...), for the caller to show
        from .bundled import recommended_settings

        self.recommended = recommended_settings(model.path)  # a bundled model's own defaults

    @classmethod
    def from_folder(cls, folder: str | Path, device: str = defaults.DEVICE, dtype: str | torch.dtype | None = defaults.DTYPE,
                    resolved: ResolvedModel | None = None, *, exact: bool = defaults.EXACT,
                    quantize: str | None = defaults.QUANTIZE) -> Pipeline:
        """Load a model folder. exact: the reference's arithmetic, bit for bit (else the fastest
        faithful kernels for the device, kernels.py); quantize="int8": int8 Linear layers (CPU)."""
        dev = resolve_device(device)
        plan = plan_for(dev, None if dtype is None else resolve_dtype(dtype, dev), exact=exact, quantize=quantize)
        resolved = resolved or ResolvedModel(path=Path(folder), name=str(folder))
        return cls(load_components(Path(folder), dev, plan.dtype, plan), plan, resolved)

    @property
    def chain(self) -> Chain:
        """The usable chain: the scheduler's timesteps that the transformer can be told."""
        return Chain.of(self.c.schedule.num_timesteps, self.c.transformer.cfg.num_timesteps)

    @property
    def num_timesteps(self) -> int:
        """Steps of the whole usable chain: the default number of steps, and the most there can be."""
        return self.chain.length

    @property
    def image_size(self) -> tuple[int, int]:
        cfg, s = self.c.transformer.cfg, self.c.vqvae.cfg.scale
        return cfg.width * s, cfg.height * s

    def __call__(self, prompt: str | list[str], *, seed: int | None = None, num_images: int = defaults.NUM_IMAGES,
                 on_step: StepCallback | None = None, **settings) -> Generation:
        """One prompt (num_images of it, seeds seed, seed+1, ...) or a list of prompts (one image each,
        seeds seed, seed+1, ...)."""
        prompts = [prompt] * num_images if isinstance(prompt, str) else list(prompt)
        if num_images < 1:
            raise UsageError(f"-n {num_images}: the number of images must be at least 1")
        base = random_seed() if seed is None else int(seed)
        settings = Settings(**{**self.recommended, **settings})
        return self.generate(prompts, [base + i for i in range(len(prompts))], settings, on_step=on_step)

    @torch.inference_mode()
    def generate(self, prompts: list[str], seeds: list[int], settings: Settings, on_step: StepCallback | None = None) -> Generation:
        """Images for prompts[i] with seeds[i], all run through the network together."""
        tokens, timesteps, warnings = self.generate_tokens(prompts, seeds, settings, on_step)
        images = self.decode(tokens)
        return Generation(images, list(seeds), list(prompts), settings, timesteps, warnings)

    @torch.inference_mode()
    def encode_prompts(self, prompts: list[str], guided: bool) -> tuple[torch.Tensor, list[str]]:
        """(text (B or 2B, L, E), warnings): each distinct prompt encoded once; with guidance the
        null sequence first, [uncond x B ; cond x B], as the reference orders them."""
        c = self.c
        unique = list(dict.fromkeys(prompts))
        encoded = c.text_encoder.encode(unique)
        by_prompt = dict(zip(unique, encoded.embeddings))
        text = torch.stack([by_prompt[p] for p in prompts])  # (B, L, E)
        warnings = [f"prompt longer than {c.text_encoder.length} tokens; its end is ignored (as the reference does): {p[:60]!r}"
                    for p in encoded.truncated]
        if guided:
            text = torch.cat([c.text_encoder.null().expand_as(text), text])
        return text, warnings

    @torch.inference_mode()
    def generate_tokens(self, prompts, seeds, settings: Settings, on_step=None, inspect=None, edit=None):
        """(tokens (B, N), timesteps, warnings). inspect(t, x_t, log p(x0 | x_t)), if given, sees each
        step's input and the network's guided output before truncation (for measurements).

        edit (an editing.TokenEdit): start from the source's tokens at edit.start_timestep instead of
        all masks at the top, and put the kept tokens back after every step (editing.py)."""
        settings.validate(self.chain)  # here, not only in generate: a step beyond the chain would crash
        c, device = self.c, self.device
        cfg = c.transformer.cfg
        B = len(prompts)
        guided = settings.guidance > 1.0

        # 1. Text, once per distinct prompt; the guidance null once.
        text, warnings = self.encode_prompts(prompts, guided)

        # 2. Cross-attention keys/values of the text: fixed for the whole chain.
        memory = c.transformer.text_memory(text)

        # 3. Which timesteps, and the transition tables for each jump, all on the device up front.
        steps = settings.steps or self.num_timesteps
        if edit is None:
            timesteps = timesteps_for(settings.schedule, self.num_timesteps, steps)
        else:
            timesteps = timesteps_from(settings.schedule, self.num_timesteps, steps, edit.start_timestep)
        transitions = c.schedule.transitions(timesteps, timesteps[1:] + [-1])
        transitions = [type(tr)(*(v.to(device) for v in vars(tr).values())) for tr in transitions]
        t_tensors = [torch.tensor(t, device=device) for t in timesteps]
        generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]

        # 4. The reverse chain from all masks (or, for an edit, from the source's noised tokens).
        if edit is None:
            x = torch.full((B, cfg.num_tokens), cfg.mask_id, dtype=torch.long, device=device)
        else:
            x = edit.initial(timesteps[0], generators)
        for i, t in enumerate(t_tensors):
            logp = c.transformer(torch.cat([x, x]) if guided else x, t, memory)  # (B or 2B, K-1, N)
            if guided:
                logp = apply_guidance(logp, settings.guidance)
            if inspect is not None:
                inspect(t, x, logp)
            logp = truncate(logp, settings.truncation)
            if i == len(t_tensors) - 1:
                x = gumbel_sample(logp, generators)  # the last step draws x0 at every position
            elif settings.sampler == "purity":
                keep = c.schedule.ctt[timesteps[i + 1]] / c.schedule.ctt[timesteps[i]]
                x = purity_step(logp, x, [keep] * B, settings.purity_weight, generators)
            else:
                x = gumbel_sample(posterior_logits(logp, x, transitions[i]), generators)
            if edit is not None:
                x = edit.after_step(x, timesteps[i + 1] if i + 1 < len(timesteps) else -1, generators)
            if on_step is not None:
                on_step(i + 1, len(t_tensors))
        if edit is not None and edit.context_timestep is not None:
            # What the decoder will see around the hole (editing.py, "context"): the kept positions
            # masked, the new tokens as drawn, one more network call, the most likely token at each
            # kept position. No random numbers.
            x_in = edit.context_input(x)
            t = torch.tensor(edit.context_timestep, device=device)
            logp = c.transformer(torch.cat([x_in, x_in]) if guided else x_in, t, memory)
            if guided:
                logp = apply_guidance(logp, settings.guidance)
            edit.decode_tokens = edit.with_context(x, truncate(logp, settings.truncation).argmax(dim=1))
        return x, timesteps, warnings

    @torch.inference_mode()
    def decode(self, tokens: torch.Tensor) -> list:
        from PIL import Image

        cfg = self.c.transformer.cfg
        # One image at a time, like the reference: convolution kernels may pick a different
        # algorithm (and different last bits) for a different batch size.
        return [Image.fromarray(to_uint8(self.c.vqvae.decode(row[None], cfg.height, cfg.width))[0].cpu().numpy())
                for row in tokens]

    # ----------------------------------------------------------------------------------------
    # Editing (editing.py): inpainting with a mask, variations without one.

    def edit(self, image, prompt: str | list[str], mask=None, *, strength: float = defaults.EDIT_STRENGTH, seed: int | None = None,
             num_images: int = defaults.NUM_IMAGES, on_step: StepCallback | None = None, region=None,
             grow: int | None = None, fit: str | None = None, paste: bool | None = None, feather: int | None = None,
             start: str | None = None, keep: str | None = None, fill: str | None = None, context: str | None = None,
             **settings) -> Generation:
        """Repaint the white (or opaque) part of `mask` on `image` following `prompt`; without a mask,
        a variation of the whole image. image/mask: a file path, a PIL image or a uint8 array, any
        size and mode. strength in (0, 1]: how far back along the chain the repainted tokens go (1:
        from the mask token, as generation; 0.3: a close variation). region: (x0, y0, x1, y1) pixels
        of the image to repaint (with mask: both). Seeds and prompts as in __call__; settings as in
        Settings. Returns the same Generation as __call__, with .edits saying what each image was
        made from."""
        from .editing import EditOptions

        prompts = [prompt] * num_images if isinstance(prompt, str) else list(prompt)
        if num_images < 1:
            raise UsageError(f"-n {num_images}: the number of images must be at least 1")
        chosen = {k: v for k, v in dict(grow=grow, fit=fit, paste=paste, feather=feather, start=start, keep=keep, fill=fill,
                                                 context=context).items() if v is not None}
        options = EditOptions(strength=strength, **chosen)
        options.validate()
        source = self.prepare_source(image, mask, region=region, fit=options.fit, grow=options.grow)
        base = random_seed() if seed is None else int(seed)
        settings = Settings(**{**self.recommended, **settings})
        return self.edit_sources([source] * len(prompts), prompts, [base + i for i in range(len(prompts))], settings,
                                 options, on_step=on_step)

    def prepare_source(self, image, mask=None, *, region=None, fit: str = defaults.EDIT_FIT, grow: int = defaults.EDIT_GROW):
        """An editing.EditSource at this model's size and token grid."""
        from .editing import prepare_source

        return prepare_source(image, mask, size=self.image_size, cell=self.c.vqvae.cfg.scale, fit=fit, grow=grow, region=region)

    @torch.inference_mode()
    def encode_image(self, image) -> torch.Tensor:
        """A PIL RGB image at the model's size -> its tokens (N,) by the VQ-VAE encoder."""
        from .editing import image_to_tensor

        vq = self.c.vqvae
        dtype = next(vq.parameters()).dtype
        return vq.encode(image_to_tensor(image, self.device, dtype))[0]

    def edit_start(self, source, options) -> int:
        """The timestep an edit of `source` starts from."""
        from .editing import match_timestep, strength_timestep

        length = self.num_timesteps
        if options.strength >= 1 and options.start == "match":
            return match_timestep(self.c.schedule, length, source.repaint_share)
        return strength_timestep(self.c.schedule, length, options.strength)

    @torch.inference_mode()
    def edit_sources(self, sources: list, prompts: list[str], seeds: list[int], settings: Settings, options,
                     on_step: StepCallback | None = None) -> Generation:
        """Edit sources[i] (editing.EditSource) with prompts[i] and seeds[i]. Rows that start from the
        same timestep run through the network together."""
        from .editing import EditInfo, TokenEdit, match_timestep, paste_back

        options.validate()
        settings.validate(self.chain)
        for source in dict((id(s), s) for s in sources).values():
            if options.fill not in source.encoded:
                source.encoded[options.fill] = self.encode_image(source.encoder_input(options.fill))
        starts = [self.edit_start(s, options) for s in sources]
        tokens: list = [None] * len(sources)
        decoded: list = [None] * len(sources)  # what is decoded: the tokens, or with a predicted context
        timesteps_of: dict[int, list[int]] = {}
        warnings: list[str] = []
        for t0 in dict.fromkeys(starts):
            rows = [i for i, t in enumerate(starts) if t == t0]
            x0 = torch.stack([sources[i].encoded[options.fill] for i in rows]).to(self.device)
            repaint = torch.stack([torch.from_numpy(sources[i].repaint.reshape(-1)) for i in rows]).to(self.device)
            edit = TokenEdit(x0, repaint, options.strength, options.keep, self.c.schedule, t0)
            if options.paste and options.context == "predicted" and bool((~repaint).any()):
                kept_share = float((~repaint).float().mean())
                edit.context_timestep = match_timestep(self.c.schedule, self.num_timesteps, kept_share)
            x, timesteps, w = self.generate_tokens([prompts[i] for i in rows], [seeds[i] for i in rows], settings, on_step, edit=edit)
            timesteps_of[t0] = timesteps
            warnings += w
            shown = edit.decode_tokens if edit.decode_tokens is not None else x
            for j, i in enumerate(rows):
                tokens[i], decoded[i] = x[j], shown[j]
        images = self.decode(torch.stack(decoded))
        feather = options.feather if options.feather is not None else self.c.vqvae.cfg.scale // 2
        edits = []
        for i, source in enumerate(sources):
            decoded_image = images[i]
            if options.paste and source.pixel_mask is not None:
                images[i] = paste_back(images[i], source.image, source.pixel_mask, feather)
            edits.append(EditInfo(source, options, starts[i], len(timesteps_of[starts[i]]), {"feather": feather}, tokens[i],
                                  source.encoded[options.fill], decoded_image))
        return Generation(images, list(seeds), list(prompts), settings, timesteps_of[starts[0]], list(dict.fromkeys(warnings)), edits)
