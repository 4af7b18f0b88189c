"""Run-relative names of the files a shard attempt writes (no imports: :mod:`.plan` and :mod:`.storage` use it).

Each id is one path segment, escaped injectively (:func:`segment`), each attempt writes into folders of its
own, and each source has its own folder of styles, so no two (source, style) pairs or attempts share a path.
"""

from __future__ import annotations

from urllib.parse import quote

__all__ = ["segment", "synth_rel", "label_rel", "image_rel", "attempt_folders"]


def segment(name: str) -> str:
    """``name`` as one path segment, injectively: percent-escaped (``/``, ``%``, glob characters, spaces, ...),
    and a leading ``.`` escaped too, so ``..`` or ``.hidden`` never walk out of or hide in a folder."""
    out = quote(str(name), safe="-_.~=+,@")
    return "%2E" + out[1:] if out.startswith(".") else out


def synth_rel(shard: str, source_id: str, attempt_id: str) -> str:
    return f"synth/{shard}/{segment(attempt_id)}/{segment(source_id)}.png"


def label_rel(shard: str, source_id: str, attempt_id: str) -> str:
    return f"labels/{shard}/{segment(attempt_id)}/{segment(source_id)}.png"


def image_rel(shard: str, source_id: str, style_id: str, attempt_id: str) -> str:
    """``images/<shard>/<attempt>/<source>/<style>.png``."""
    return f"images/{shard}/{segment(attempt_id)}/{segment(source_id)}/{segment(style_id)}.png"


def attempt_folders(shard: str, attempt_id: str) -> list[str]:
    """The folders only attempt ``attempt_id`` of ``shard`` writes into."""
    return [f"{sub}/{shard}/{segment(attempt_id)}" for sub in ("labels", "synth", "images")]
