"""The distill -> prune -> quantize -> emit flow: a recipe, its stages, gates and saved checkpoints."""
