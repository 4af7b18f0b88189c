"""spadepis.pipeline.worker's per-process style cache under concurrent shards (thread runner)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from pipeline_helpers import make_inputs, small_config
from spadepis.pipeline import worker as shard_mod
from spadepis.errors import InputError


class _SlowStylizer:
    def __init__(self, fail: bool = False):
        self.calls = 0
        self.fail = fail
        self.lock = threading.Lock()

    def prepare_style(self, style, style_seg=None, *, style_id=None):
        with self.lock:
            self.calls += 1
        time.sleep(0.2)
        if self.fail:
            raise InputError("unusable")
        return object()


@pytest.mark.parametrize("fail", [False, True])
def test_style_prepared_once_when_shards_ask_concurrently(tmp_path, monkeypatch, fail):
    # Regression: two shard threads asking for the same uncached style both prepared it.
    root = make_inputs(tmp_path, n_maps=0, n_styles=1)
    cfg = small_config(root)
    fake = _SlowStylizer(fail)
    monkeypatch.setattr(shard_mod, "get_stylizer", lambda config, device: fake)
    shard_mod.clear_model_cache()
    uri = str(root / "styles" / "style0.png")

    def ask(_):
        try:
            return shard_mod.get_style_cache(cfg, "cpu", "style0", uri)[0]
        except InputError as exc:
            return exc

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(ask, range(4)))
    shard_mod.clear_model_cache()
    assert fake.calls == 1
    if fail:
        assert all(isinstance(r, InputError) for r in results)
    else:
        assert all(r is results[0] for r in results)
    assert not shard_mod._STYLES_PENDING
