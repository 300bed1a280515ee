"""The layout of a VQ-Diffusion model folder, as diffusers writes it, plus vqgen's own file.

Constants only (no torch, no huggingface_hub): loader.py reads folders in this layout, cache.py and
hub.py recognise them in the Hugging Face cache, demo/export.py writes them.
"""

PIPELINE_CLASS = "VQDiffusionPipeline"  # model_index.json's _class_name
NULL_FOLDER = "learned_classifier_free_sampling_embeddings"  # the learned guidance embedding

# vqgen's own file beside model_index.json, optional: {"recommended": {setting: value, ...}}, the
# settings the model's authors recommend over vqgen's global defaults (settings.py).
VQGEN_FILE = "vqgen.json"
