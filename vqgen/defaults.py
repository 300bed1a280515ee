"""The one place for every user-facing default. CLI options and the Python API both read these."""

MODEL = "microsoft/vq-diffusion-ithq"

# Published advice for ITHQ (Tang et al. 2022): guidance 5 with truncation 1.0,
# or no guidance (1.0) with truncation 0.86.
GUIDANCE = 5.0
TRUNCATION = 1.0

# None means "the model's whole chain" (100 steps for ITHQ): the only setting in which the
# reference and vqgen agree bit for bit under every schedule.
STEPS = None

# strided: S steps spread over the whole chain (exact multi-step posterior); see schedule.py.
SCHEDULE = "strided"
SAMPLER = "posterior"
PURITY_WEIGHT = 1.0

NUM_IMAGES = 1
# Images per network run when more are asked for: more only costs memory, not time per image.
CHUNK_SIZE = 8
DEVICE = "auto"
DTYPE = None  # None: the device's natural choice for the transformer (kernels.py)

# The fastest faithful kernels for the device by default; exact = the reference's arithmetic, bit
# for bit (kernels.py says what each mode runs).
EXACT = False
QUANTIZE = None  # or "int8" (CPU)

# Output file name when -o is not given: derived from the prompt, capped to this many characters.
SLUG_MAX_CHARS = 60

# `vqgen train-demo`: the seed that made the bundled shapes model (how it was chosen: TRAINING.md
# beside the model).
DEMO_TRAIN_SEED = 1

# `vqgen edit` / Pipeline.edit (editing.py). Chosen by bench/bench_edit.py on the shapes yardstick
# (docs/editing.md): strength 1 repaints the masked tokens from the mask token, from the top of the
# chain, the kept tokens noised like the rest at every step; the masked region
# grows by 2 tokens; the image is centre-cropped to the model's size; the original pixels are
# pasted back outside the mask over a feathered edge (None: half a token cell wide).
EDIT_STRENGTH = 1.0
EDIT_GROW = 2
EDIT_START = "top"  # strength 1 with a mask: the chain starts at T-1 ("match": where ctt[t] equals the hole's share)
EDIT_KEEP = "noised"  # the kept tokens are re-drawn from q(x_s | x0) after every step, and are x0 after the last
EDIT_FIT = "crop"
EDIT_PASTE = True
EDIT_FEATHER = None
