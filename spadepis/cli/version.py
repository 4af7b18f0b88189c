"""``spadepis version``: versions of everything that matters, for bug reports."""

from __future__ import annotations

import platform
from importlib import metadata


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("spadepis", "torch", "numpy", "scipy", "cvxopt", "pillow", "prefect", "pyarrow", "pandas", "fsspec"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    from ..models.smoothing import default_exact_solver

    out["exact solver"] = default_exact_solver()
    try:
        import torch

        out["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "not available"
    except Exception as exc:  # pragma: no cover
        out["cuda"] = f"error: {exc}"
    return out


def _cmd(args) -> int:
    for key, value in _versions().items():
        print(f"{key:12s} {value}")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "version", help="print versions for bug reports",
        description="Print the versions of spadepis, Python, the platform, torch, numpy, scipy, cvxopt (the cholmod "
        "extra), Pillow, Prefect, pyarrow, pandas and fsspec, the exact smoothing solver in use and the CUDA device; paste them into bug reports.",
    )
    p.set_defaults(func=_cmd)
