"""Prompts -> the (L, E) text memory the transformer cross-attends to (SPEC section 2).

The CLIP tokenizer and text model come from `transformers`; the VQ-Diffusion specifics are here:
no truncation before padding (then keep the first 77 ids, as the reference does), no attention
mask, and each token vector divided by its L2 norm. The guidance "null" sequence is the learned
embedding used raw, or, for models without one, CLIP("") normalised like a prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class EncodedPrompts:
    embeddings: torch.Tensor  # (P, L, E), normalised
    truncated: list[str] = field(default_factory=list)  # prompts that lost tokens beyond L


class TextEncoder:
    def __init__(self, tokenizer, model, learned_null: torch.Tensor | None):
        self.tokenizer = tokenizer
        self.model = model
        self.learned_null = learned_null  # (L, E) or None
        self.length = tokenizer.model_max_length

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _ids(self, prompt: str, truncation: bool) -> torch.Tensor:
        ids = self.tokenizer(prompt, padding="max_length", max_length=self.length, truncation=truncation).input_ids
        return torch.tensor(ids[: self.length])

    @torch.inference_mode()
    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        hidden = self.model(ids.to(self.device)).last_hidden_state  # (P, L, E), after the final norm
        return hidden / hidden.norm(dim=-1, keepdim=True)

    def encode(self, prompts: list[str]) -> EncodedPrompts:
        # One prompt at a time, as the reference encodes them: a prompt's embedding then never
        # depends on what else is in the batch (and over-long prompts cannot make a ragged batch).
        embeddings = [self._embed(self._ids(p, truncation=False)[None])[0] for p in prompts]
        truncated = [p for p in prompts if len(self.tokenizer(p).input_ids) > self.length]
        return EncodedPrompts(torch.stack(embeddings), truncated)

    def null(self) -> torch.Tensor:
        """(L, E): the unconditional sequence for classifier-free guidance."""
        if self.learned_null is not None:
            return self.learned_null
        return self._embed(self._ids("", truncation=True)[None])[0]
