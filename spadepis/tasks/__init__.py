"""Thin Prefect tasks around library calls (``spadepis`` itself never imports Prefect)."""

# The task tag a concurrency limit bounds shard tasks with (``spadepis deploy --gpu-slots``). Defined here,
# Prefect-free, so the CLI can name it without importing Prefect.
GPU_TAG = "gpu"
