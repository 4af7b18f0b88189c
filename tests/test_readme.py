"""The README's Python examples run: every ```python block of README.md is executed, in order, against small
runs made the way a user makes them (`spadepis demo --out out/demo` in a fresh working folder, with the Prefect
API of the test harness, which the artifacts example then reads; for the examples on semantic style pools,
which name a CamVid run `runs/camvid-1a2b3c4d5e`, the README's `spadepis run configs/camvid.yaml
--set dataset.limit=...` on ../shared's CamVid, skipped without it). So the documented imports and paths cannot
rot. Also: the public API (`from spadepis import AugmentedDataset, read_index`) and that `import spadepis` stays
light."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import shared_path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = [(README[: m.start()].count("\n") + 2, m.group(1))
          for m in re.finditer(r"^```python\n(.*?)^```", README, re.S | re.M)]


def test_the_readme_has_python_examples():
    assert len(BLOCKS) >= 4, "README.md: expected the manifest-reading examples as ```python blocks"


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory, prefect_harness):
    """`spadepis demo --out out/demo` in a fresh folder (2 label maps: the examples need a run, not a big one)."""
    from spadepis.cli import main

    folder = tmp_path_factory.mktemp("readme")
    before = os.getcwd()
    os.chdir(folder)
    try:
        assert main(["demo", "--out", "out/demo", "--n-maps", "2"]) == 0
    finally:
        os.chdir(before)
    assert (folder / "out/demo/runs/demo/index.parquet").is_file()
    return folder


CAMVID_PLACEHOLDER = "runs/camvid-1a2b3c4d5e"  # the README's name for "your CamVid run"


@pytest.fixture(scope="module")
def camvid_run(tmp_path_factory, prefect_harness):
    """The README's CamVid command on one photo (2 styles from the semantic pool), outputs in a temporary folder."""
    from spadepis.cli import main

    shared_path("data", "camvid", "val_img")
    shared_path("weights", "wct_16x")
    out = tmp_path_factory.mktemp("readme-camvid")
    before = os.getcwd()
    os.chdir(ROOT)  # the config's paths are relative to the checkout, as for a user running it there
    try:
        assert main(["run", "configs/camvid.yaml", "--set", "dataset.limit=1", "--set", "models.smoothing=fast",
                     "--set", f"output={out}"]) == 0
    finally:
        os.chdir(before)
    (run,) = [p for p in out.iterdir() if p.name.startswith("camvid-")]
    return run


@pytest.mark.parametrize("line,code", BLOCKS, ids=[f"README.md:{line}" for line, _ in BLOCKS])
def test_readme_python_block_runs(line, code, demo_folder, monkeypatch, capsys, request):
    if CAMVID_PLACEHOLDER in code:
        code = code.replace(CAMVID_PLACEHOLDER, str(request.getfixturevalue("camvid_run")))
    monkeypatch.chdir(demo_folder)
    exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    if "print(" in code or ".show()" in code:
        assert out.strip(), f"the README example at line {line} prints nothing"


def test_public_api_and_its_documented_paths():
    import spadepis
    import spadepis.manifest
    import spadepis.pipeline.manifest as impl

    from spadepis import AugmentedDataset, read_index

    assert AugmentedDataset is impl.AugmentedDataset and read_index is impl.read_index
    assert spadepis.manifest.AugmentedDataset is AugmentedDataset and spadepis.manifest.read_index is read_index
    assert {"AugmentedDataset", "read_index"} <= set(spadepis.__all__) <= set(dir(spadepis))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        spadepis.nope  # noqa: B018


def test_import_spadepis_stays_light():
    code = ("import sys, spadepis; heavy = [m for m in ('torch', 'pandas', 'pyarrow', 'prefect') if m in sys.modules];"
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
