"""spadepis.data.images: reading photos of unusual formats."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from spadepis.data.images import read_rgb
from spadepis.errors import InputError


def test_read_rgb_scales_16bit_grey_instead_of_clipping(tmp_path):
    # Regression: PIL's convert("RGB") clips I;16 values at 255, so a 16-bit grey photo (style or
    # stylize-only source) came out almost entirely white.
    grey16 = (np.arange(32 * 40).reshape(32, 40) * 51).astype(np.uint16)
    path = tmp_path / "grey16.png"
    Image.fromarray(grey16).save(path)
    assert Image.open(path).mode.startswith("I")
    rgb = read_rgb(path)
    assert rgb.shape == (32, 40, 3) and rgb.dtype == np.uint8
    expected = np.round(grey16 / 257.0).astype(np.uint8)
    assert np.abs(rgb[..., 0].astype(int) - expected).max() <= 1
    assert (rgb[..., 0] == rgb[..., 2]).all()


def test_read_rgb_keeps_8bit_grey_and_rgb(tmp_path):
    grey = (np.arange(20 * 24).reshape(20, 24) % 256).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    assert (read_rgb(tmp_path / "g.png") == grey[..., None]).all()
    rgb = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    assert (read_rgb(tmp_path / "c.png") == rgb).all()


def test_check_rgb_uint8_names_what_and_the_fix():
    from spadepis.data.images import check_rgb_uint8

    img = np.zeros((2, 3, 3), np.uint8)
    assert check_rgb_uint8(img, "content") is img
    for bad, msg in ((img.tolist(), "got list"), (img[..., :1], r"shape \(H, W, 3\)"),
                     (img.astype(np.float32), "float_to_uint8"), (np.zeros((0, 3, 3), np.uint8), "is empty")):
        with pytest.raises(InputError, match=r"^style image.*" + msg):
            check_rgb_uint8(bad, "style image")
