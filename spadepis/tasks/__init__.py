"""Thin Prefect tasks around library calls (``spadepis`` itself never imports Prefect)."""
