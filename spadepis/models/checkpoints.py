"""Reading checkpoint files safely and explaining why they do not fit.

Checkpoints are read with ``torch.load(..., weights_only=True)`` (no pickled code runs), from a
local path or any fsspec URI, in both the legacy (2018/2019) and the zip serialisation; ``.xz``
files are decompressed on the fly. The sha256 of the file's bytes is recorded for the manifest.
"""

from __future__ import annotations

import hashlib
import io
import lzma
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import CheckpointError

__all__ = ["LoadedCheckpoint", "read_checkpoint", "check_state_dict", "sha256_bytes", "tensor_digest"]

_LFS_HEADER = b"version https://git-lfs.github.com/spec"


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A state dict and where it came from."""

    state_dict: dict[str, torch.Tensor]
    uri: str
    sha256: str
    """sha256 of the file's bytes exactly as stored (before any xz decompression)."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tensor_digest(state_dict: Mapping[str, torch.Tensor]) -> str:
    """sha256 over (key bytes + raw tensor bytes) in state-dict order.

    Independent of the serialisation format, so two saves of the same weights agree.
    """
    h = hashlib.sha256()
    for key, value in state_dict.items():
        h.update(key.encode())
        t = value.detach().cpu().contiguous()
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _read_bytes(uri: str | Path) -> bytes:
    uri = str(uri)
    try:
        from ..data.fs import open_uri

        with open_uri(uri, "rb") as f:
            return f.read()
    except FileNotFoundError as exc:
        raise CheckpointError(
            f"checkpoint {uri!r} does not exist: pass the path (or fsspec URI) of the file, "
            "e.g. checkpoints/coco_pretrained/latest_net_G.pth"
        ) from exc
    except IsADirectoryError as exc:
        raise CheckpointError(
            f"checkpoint {uri!r} is a folder: pass the file inside it (for SPADE, latest_net_G.pth)"
        ) from exc
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {uri!r}: {exc}. Check the path and permissions.") from exc


def read_checkpoint(uri: str | Path, *, unwrap: tuple[str, ...] = ("state_dict",)) -> LoadedCheckpoint:
    """Read a checkpoint file into a plain ``{key: tensor}`` dict.

    Parameters
    ----------
    uri:
        Local path or fsspec URI. Files ending in ``.xz`` are decompressed first.
    unwrap:
        Keys of wrapper dicts to descend into when the file holds ``{key: state_dict, ...}``
        (e.g. ``{'epoch', 'model'}`` files pass ``unwrap=("model",)``).

    Raises
    ------
    CheckpointError
        Missing, truncated, git-lfs pointer, not a state dict: the message names the file.
    """
    uri = str(uri)
    raw = _read_bytes(uri)
    digest = sha256_bytes(raw)
    data = raw
    if raw.startswith(_LFS_HEADER):
        raise CheckpointError(
            f"checkpoint {uri!r} is a git-lfs pointer ({len(raw)} bytes), not the weights: "
            "run `git lfs pull` in the repository it came from, or download the real file."
        )
    if uri.endswith(".xz") or raw[:6] == b"\xfd7zXZ\x00":
        try:
            data = lzma.decompress(raw)
        except lzma.LZMAError as exc:
            raise CheckpointError(f"checkpoint {uri!r} is a corrupt or truncated .xz file ({exc}); download it again.") from exc
    if len(data) == 0:
        raise CheckpointError(f"checkpoint {uri!r} is empty (0 bytes); download it again.")
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for bad files
        raise CheckpointError(_explain_load_failure(uri, len(raw), exc)) from exc
    for key in unwrap:
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        kind = type(obj).__name__
        keys = list(obj.keys())[:8] if isinstance(obj, Mapping) else []
        raise CheckpointError(
            f"checkpoint {uri!r} holds a {kind}{' with keys ' + str(keys) if keys else ''}, not a state dict of tensors; "
            "pass a file written by torch.save(model.state_dict(), path)."
        )
    return LoadedCheckpoint(state_dict=dict(obj), uri=uri, sha256=digest)


def _explain_load_failure(uri: str, size: int, exc: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused the file, naming the offending pickle global instead of
    repeating torch's advice to load it with ``weights_only=False`` (which would run the file's code)."""
    import re

    text = str(exc)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return (
            f"cannot load checkpoint {uri!r} ({size} bytes): besides tensors it holds a pickled {found.group(1)} object, "
            "and spadepis never runs pickled code (torch.load(..., weights_only=True)). Save the weights alone where "
            "you trust the file: torch.save(model.state_dict(), 'weights.pth') (or the state-dict entry of the file), "
            "and point the config at that file."
        )
    unpickler = re.search(r"WeightsUnpickler error: ([^\n]+)", text)
    if unpickler or "weights_only" in text:
        what = unpickler.group(1).strip() if unpickler else "it holds objects other than tensors"
        return (
            f"cannot load checkpoint {uri!r} ({size} bytes): {what}; spadepis never runs pickled code "
            "(weights_only=True). Save the weights alone where you trust the file: torch.save(model.state_dict(), path)."
        )
    first = text.splitlines()[0] if text else type(exc).__name__
    return (
        f"cannot load checkpoint {uri!r} ({size} bytes): {first}. Likely cause: it is truncated or not a PyTorch file; "
        "download it again and compare its size with the original."
    )


def _fmt(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def check_state_dict(
    expected: Mapping[str, tuple[int, ...] | torch.Size],
    found: Mapping[str, torch.Tensor],
    *,
    uri: str,
    what: str,
    suggestion: str = "",
    optional: tuple[str, ...] = (),
) -> None:
    """Refuse a state dict whose keys or shapes differ from ``expected``.

    ``optional`` lists key suffixes that may be absent (e.g. ``num_batches_tracked``).
    The error names the file, the missing and unexpected keys, the shape mismatches, and
    ``suggestion`` (which preset or options would match what was found).
    """
    missing = [k for k in expected if k not in found and not k.endswith(optional)]
    unexpected = [k for k in found if k not in expected]
    mismatched = [
        f"{k}: file {tuple(found[k].shape)} vs model {tuple(expected[k])}"
        for k in expected
        if k in found and tuple(found[k].shape) != tuple(expected[k])
    ]
    if not (missing or unexpected or mismatched):
        return
    parts = [f"checkpoint {uri!r} does not fit {what}:"]
    if missing:
        parts.append(f"  {len(missing)} missing keys: {_fmt(missing)}")
    if unexpected:
        parts.append(f"  {len(unexpected)} unexpected keys: {_fmt(unexpected)}")
    if mismatched:
        parts.append(f"  {len(mismatched)} shape mismatches: {_fmt(mismatched, 6)}")
    parts.append(f"  {suggestion}" if suggestion else "  check that the file is the model you meant to load.")
    raise CheckpointError("\n".join(parts))
