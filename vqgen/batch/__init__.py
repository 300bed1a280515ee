"""`vqgen batch`: many prompts from a file into one folder, resumable, batched, and split across
torchrun processes.

prompts.py reads the prompt file; jobs.py turns it into the list of images (a pure function of
the file and the options, so every process computes the same list); manifest.py writes
OUTDIR/manifest.jsonl safely from several processes; distributed.py talks to torchrun; runner.py
makes the images. Nothing here imports torch at module level except runner and distributed.
"""
