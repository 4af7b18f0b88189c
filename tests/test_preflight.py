"""spadepis.pipeline.preflight: check_config runs once per run (the CLI checks, the flow does not check again)."""

from __future__ import annotations

import pytest

from pipeline_helpers import make_inputs, small_config
from spadepis.errors import ConfigError
from spadepis.pipeline import preflight


def test_check_config_runs_once_per_config(tmp_path, monkeypatch):
    cfg = small_config(make_inputs(tmp_path, n_maps=1, n_styles=1), models={"smoothing": "none"})
    calls = []
    real = preflight.validate_config
    monkeypatch.setattr(preflight, "validate_config", lambda c: calls.append(c) or real(c))
    preflight.check_config(cfg)
    preflight.check_config(cfg.resolved())  # what the flow gets: the same run
    assert len(calls) == 1
    other = cfg.model_copy(update={"shard_size": 1})
    preflight.check_config(other)
    assert len(calls) == 2
    # a config with problems is checked (and refused) every time
    bad = cfg.model_copy(update={"styles": cfg.styles.model_copy(update={"source": str(tmp_path / "none")})})
    for _ in range(2):
        with pytest.raises(ConfigError, match="styles.source"):
            preflight.check_config(bad)
    assert len(calls) == 4
