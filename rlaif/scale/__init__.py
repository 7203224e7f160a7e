"""Beyond one process: generation on a Ray cluster (ray.py); training scales with `accelerate launch` (docs/scaling.md)."""
