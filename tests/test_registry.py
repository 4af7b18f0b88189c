"""One registry per kind (``spadepis.models.registry``, ``spadepis.data.presets.PRESETS``): the CLI's choices
and the "unknown name" errors come from it."""

from __future__ import annotations

import pytest

from spadepis.cli import build_parser, main
from spadepis.errors import ConfigError
from spadepis.models.registry import COMPAT_MODES, SMOOTHERS, STYLIZERS, WCT_PRECISIONS


def _choices(command: str) -> dict[str, list]:
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices[command]
    return {a.dest: list(a.choices) for a in sub._actions if a.choices}


def test_cli_choices_come_from_the_registries():
    assert _choices("stylize") == {"stylizer": list(STYLIZERS), "smoothing": list(SMOOTHERS), "compat": list(COMPAT_MODES),
                                   "wct_precision": list(WCT_PRECISIONS)}
    assert list(STYLIZERS) == ["photowct", "wct16x", "color"] and list(SMOOTHERS) == ["exact", "fast", "none"]
    # `spadepis smooth` offers the modes that smooth (not `none`)
    assert _choices("smooth") == {"mode": ["exact", "fast"], "compat": ["fastphotostyle"]}


def test_unknown_names_list_the_registry():
    with pytest.raises(ConfigError, match=r"unknown stylizer 'colour': choose one of photowct, wct16x, color\."):
        STYLIZERS.check("colour")
    assert SMOOTHERS.check("none").identity and not SMOOTHERS.check("exact").identity
    assert STYLIZERS.literal().__args__ == STYLIZERS.names


def test_weights_rules_come_from_the_stylizer_entries(tmp_path, capsys):
    args = ["stylize", "--content", "c.png", "--style", "s.png", "--out", str(tmp_path / "o.png")]
    assert main(args + ["--stylizer", "wct16x"]) == 1
    assert f"--stylizer wct16x needs --weights ({STYLIZERS['wct16x'].weights})" in capsys.readouterr().err
    assert main(args + ["--stylizer", "color", "--weights", "w.pth"]) == 1
    assert "--stylizer color takes no --weights; drop it or pick photowct/wct16x" in capsys.readouterr().err
