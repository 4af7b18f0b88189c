"""Label-space mapping: a dataset's own label ids -> the label space of a SPADE preset.

The official SPADE generators exist for three label spaces only (COCO-Stuff, ADE20K, Cityscapes). A
:class:`LabelRemap` lets a label map in any other id space (CamVid, Cityscapes ``trainIds``, an in-house
scheme) drive one of them: every id of the map is looked up in a table ``source_id -> target_id`` before
the preset's checks and one-hot encoding, so the generator sees the mapped map, while the file itself (and
the manifest's ``label_uri``) keeps the dataset's own ids.

A table comes from (:func:`load_label_remap`):

* an inline mapping ``{0: 23, 1: 11, ...}`` (config ``dataset.label_remap``), named in the manifest by
  ``inline:<first 12 hex of its sha256>``;
* a CSV file ``source_id,target_id[,source_name[,target_name]]`` (``#`` comments, optional header line) or a
  YAML file (a mapping ``{source_id: target_id}`` or a list of ``{source_id, target_id, name}``), local or any
  fsspec URI, named ``<file name>@<12 hex>``;
* a table shipped with spadepis (:data:`TABLES`), named by its name: ``camvid->cityscapes`` (CamVid's 11
  classes + void) and ``cityscapes_trainid->cityscapes`` (the 19 train ids + 255), with class names on both
  sides.

Ids the table does not name (``unmapped``): ``error`` makes the map a bad input (an
:class:`~spadepis.errors.InputError` naming the ids and a pixel), ``dontcare`` sends them to the preset's
dontcare label (presets without one refuse it). Target ids must be ids of the preset (``0..label_nc-1``, or
``255`` = dontcare for presets with a dontcare label); :meth:`LabelRemap.problems` names every entry that is
not.

>>> remap = load_label_remap("camvid->cityscapes")
>>> remap.mapping[3], remap.source_names[3], remap.target_names[3]
(7, 'road', 'road')
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any

import numpy as np

from ..errors import ConfigError, InputError
from .presets import Preset

__all__ = ["RemapTable", "TABLES", "UNMAPPED", "LabelRemap", "load_label_remap", "parse_remap_text", "scan_ids"]

UNMAPPED = ("error", "dontcare")
"""What happens to ids a table does not name (``dataset.unmapped``)."""


@dataclass(frozen=True)
class RemapTable:
    """A table shipped with spadepis: its CSV file in ``spadepis/data/label_tables`` and the preset it maps into."""

    name: str
    file: str
    target_preset: str
    description: str


TABLES: dict[str, RemapTable] = {
    t.name: t
    for t in (
        RemapTable("camvid->cityscapes", "camvid_to_cityscapes.csv", "cityscapes",
                   "CamVid (SegNet version) 11 classes + void -> Cityscapes labelIds"),
        RemapTable("cityscapes_trainid->cityscapes", "cityscapes_trainid_to_cityscapes.csv", "cityscapes",
                   "Cityscapes trainIds (19 classes + 255 ignore) -> Cityscapes labelIds"),
    )
}
"""The named tables (``dataset.label_remap: camvid->cityscapes``)."""


@dataclass(frozen=True)
class LabelRemap:
    """A table ``source_id -> target_id`` and what to do with the ids it does not name.

    Attributes
    ----------
    mapping:
        ``{source_id: target_id}``.
    label:
        how the manifest's ``label_remap`` column names it: the table's name, ``inline:<hash>`` or
        ``<file name>@<hash>`` (the hash is of the mapping, see :attr:`digest`).
    source_names, target_names:
        class names given by the table (shipped tables have both).
    target_preset:
        the preset a shipped table maps into (``None`` for the user's own tables).
    unmapped:
        ``error`` or ``dontcare`` (see the module docstring).
    """

    mapping: Mapping[int, int]
    label: str
    source_names: Mapping[int, str] = field(default_factory=dict)
    target_names: Mapping[int, str] = field(default_factory=dict)
    target_preset: str | None = None
    unmapped: str = "error"
    where: str = "dataset.label_remap"

    @property
    def digest(self) -> str:
        """sha256 of the mapping's canonical JSON (sorted source ids)."""
        return _digest(self.mapping)

    def source_preset(self) -> Preset:
        """The dataset's own label space as a preset (``custom``, no dontcare): how the dataset-space label maps of
        a remapped run (style label maps, class fractions) are read and counted. Ids ``0..max source id``; with
        ``unmapped: dontcare`` at least the 8-bit range, so maps holding unmapped ids are still counted."""
        from .presets import get_preset

        n = max(self.mapping) + 1
        if self.unmapped == "dontcare":
            n = max(n, 256)
        return get_preset("custom", label_nc=n, contain_dontcare_label=False, no_instance=True)

    def with_unmapped(self, unmapped: str | None) -> LabelRemap:
        unmapped = unmapped or "error"
        if unmapped not in UNMAPPED:
            raise ConfigError(f"dataset.unmapped: {unmapped!r} is not one of {', '.join(UNMAPPED)}")
        return replace(self, unmapped=unmapped)

    # ------------------------------------------------------------------------------ checks

    def problems(self, preset: Preset, found_unmapped: list[int] | None = None) -> list[str]:
        """Why this table cannot feed ``preset`` (``[]`` when it can): target ids outside the preset (each
        offending entry named), a shipped table made for another preset, target names that are not the
        preset's class names, ``unmapped: dontcare`` with a preset that has no dontcare label (with
        ``found_unmapped``, the unmapped ids seen in the label maps, and the entries to add)."""
        out = []
        valid = f"0..{preset.label_nc - 1}" + (" or 255 (dontcare)" if preset.contain_dontcare_label else "")
        bad = [(s, t) for s, t in sorted(self.mapping.items()) if not self._target_ok(t, preset)]
        if bad:
            shown = ", ".join(f"{s}: {t}" for s, t in bad[:12]) + (", ..." if len(bad) > 12 else "")
            out.append(
                f"{self.where} ({self.label}): {len(bad)} entr{'y maps' if len(bad) == 1 else 'ies map'} outside preset "
                f"{preset.name!r} (valid target ids: {valid}): {{{shown}}}; map them to ids of the preset"
                + ("" if preset.contain_dontcare_label else " (this preset has no dontcare label: 255 is not an id)")
            )
        if self.target_preset is not None and self.target_preset != preset.name:
            out.append(
                f"{self.where}: the table {self.label!r} maps into preset {self.target_preset!r}, but dataset.preset is "
                f"{preset.name!r}; set dataset.preset: {self.target_preset} or use a table made for {preset.name!r}"
            )
        elif preset.categories:
            wrong = [
                (s, t, name, preset.categories[t]) for s, t in sorted(self.mapping.items())
                if (name := self.target_names.get(s)) and self._target_ok(t, preset) and t < len(preset.categories)
                and name.strip().lower() != preset.categories[t].lower()
            ]
            if wrong:
                shown = "; ".join(f"{s} -> {t} is named {n!r} but {t} is {c!r}" for s, t, n, c in wrong[:6])
                out.append(f"{self.where} ({self.label}): target names that are not preset {preset.name!r}'s: {shown}; "
                           "fix the target ids (an off-by-one table?) or the names")
        if self.unmapped == "dontcare" and not preset.contain_dontcare_label:
            msg = f"dataset.unmapped: dontcare needs a preset with a dontcare label, and preset {preset.name!r} has none"
            if found_unmapped:
                name = f" ({preset.categories[0]!r})" if preset.categories else ""
                entries = ", ".join(f"{i}: 0" for i in found_unmapped[:12])
                msg += (f"; ids found in the label maps that {self.where} does not map: "
                        f"{', '.join(map(str, found_unmapped))}. Add them to the table, e.g. `{entries}` in an inline "
                        f"dataset.label_remap (0 is{name} in {preset.name!r}; for a file or shipped table, copy it and "
                        f"add lines like `{found_unmapped[0]},0`), and set `dataset.unmapped: error`")
            elif found_unmapped is not None:
                msg += "; the sampled label maps hold no unmapped id: set `dataset.unmapped: error`"
            else:
                msg += "; set `dataset.unmapped: error`, or map every id of your label maps in dataset.label_remap"
            out.append(msg)
        return out

    @staticmethod
    def _target_ok(t: int, preset: Preset) -> bool:
        return 0 <= t < preset.label_nc or (t == 255 and preset.contain_dontcare_label)

    def check(self, preset: Preset) -> None:
        """:class:`ConfigError` listing :meth:`problems`, if any."""
        problems = self.problems(preset)
        if problems:
            raise ConfigError("; ".join(problems))

    # ------------------------------------------------------------------------------ mapping

    def apply(self, ids: np.ndarray, preset: Preset, name: str = "<array>") -> np.ndarray:
        """``(H, W)`` int ids in the dataset's space -> the same map in the preset's space (int64; unmapped
        ids are 255 with ``unmapped: dontcare``, which the preset's loader turns into its dontcare label).

        Raises :class:`InputError` naming the unmapped ids and the first pixel of one (``unmapped: error``).
        """
        self.check(preset)
        arr = np.asarray(ids, dtype=np.int64)
        uniq, inverse = np.unique(arr, return_inverse=True)
        out = np.empty(len(uniq), dtype=np.int64)
        missing = []
        for i, v in enumerate(uniq.tolist()):
            t = self.mapping.get(v)
            if t is None:
                missing.append(v)
                t = 255
            out[i] = t
        if missing and self.unmapped == "error":
            ys, xs = np.nonzero(arr == missing[0])
            shown = ", ".join(map(str, missing[:12])) + (", ..." if len(missing) > 12 else "")
            raise InputError(
                f"{name}: label id(s) {shown} (first at pixel y={ys[0]}, x={xs[0]}) are not in {self.where} "
                f"({self.label}); add them to the mapping, or set dataset.unmapped: dontcare (for a preset with a "
                "dontcare label)"
            )
        return out[inverse.reshape(-1)].reshape(arr.shape)

    def describe_id(self, source_id: int, preset: Preset | None = None) -> str:
        """``"3 road -> 7 road"`` (names where known), or ``"12 -> unmapped"``."""
        src = f"{source_id}" + (f" {self.source_names[source_id]}" if source_id in self.source_names else "")
        t = self.mapping.get(source_id)
        if t is None:
            return f"{src} -> unmapped ({self.unmapped})"
        name = self.target_names.get(source_id)
        if name is None and preset is not None and preset.categories and 0 <= t < len(preset.categories):
            name = preset.categories[t]
        return f"{src} -> {t}" + (f" {name}" if name else "")


# ---------------------------------------------------------------------------------------- loading


def _digest(mapping: Mapping[int, int]) -> str:
    data = json.dumps(sorted((int(k), int(v)) for k, v in mapping.items()), separators=(",", ":"))
    return hashlib.sha256(data.encode()).hexdigest()


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{what}: {value!r} is not an integer label id")
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        raise ConfigError(f"{what}: {value!r} is not an integer label id") from None
    return number


def _add(mapping: dict[int, int], src: Any, dst: Any, where: str) -> int:
    s, t = _as_int(src, f"{where}: source id"), _as_int(dst, f"{where}: target id of {src!r}")
    if s < 0:
        raise ConfigError(f"{where}: source id {s} is negative; label ids are >= 0")
    if s in mapping and mapping[s] != t:
        raise ConfigError(f"{where}: source id {s} is mapped twice ({mapping[s]} and {t}); keep one entry")
    mapping[s] = t
    return s


def parse_remap_text(text: str, where: str) -> tuple[dict[int, int], dict[int, str], dict[int, str]]:
    """``(mapping, source_names, target_names)`` from the text of a CSV or YAML table (see the module docstring)."""
    mapping: dict[int, int] = {}
    src_names: dict[int, str] = {}
    dst_names: dict[int, str] = {}
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    first = lines[0] if lines else ""
    looks_csv = "," in first and ":" not in first.split(",")[0]
    if looks_csv:
        rows = list(csv.reader(io.StringIO("\n".join(lines))))
        for n, row in enumerate(rows):
            row = [c.strip() for c in row]
            if n == 0 and row and not row[0].lstrip("-").isdigit():
                continue  # header
            if len(row) < 2:
                raise ConfigError(f"{where}: line {row!r} is not 'source_id,target_id[,name]'")
            s = _add(mapping, row[0], row[1], f"{where}: line {','.join(row)!r}")
            if len(row) > 2 and row[2]:
                src_names[s] = row[2]
            if len(row) > 3 and row[3]:
                dst_names[s] = row[3]
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{where}: neither CSV 'source_id,target_id[,name]' nor valid YAML ({exc})") from None
        if isinstance(data, dict):
            for k, v in data.items():
                _add(mapping, k, v, where)
        elif isinstance(data, list):
            for entry in data:
                if not isinstance(entry, dict) or "source_id" not in entry or "target_id" not in entry:
                    raise ConfigError(f"{where}: entry {entry!r} needs source_id and target_id (and optionally name)")
                s = _add(mapping, entry["source_id"], entry["target_id"], where)
                if entry.get("name"):
                    src_names[s] = str(entry["name"])
                if entry.get("target_name"):
                    dst_names[s] = str(entry["target_name"])
        else:
            raise ConfigError(f"{where}: expected CSV lines 'source_id,target_id[,name]', a YAML mapping "
                              "{source_id: target_id} or a list of {source_id, target_id, name}")
    if not mapping:
        raise ConfigError(f"{where}: the table maps no id; add lines 'source_id,target_id'")
    return mapping, src_names, dst_names


def load_label_remap(spec: Mapping[Any, Any] | str, *, unmapped: str | None = None,
                     where: str = "dataset.label_remap") -> LabelRemap:
    """A :class:`LabelRemap` from an inline mapping, a shipped table's name or a CSV/YAML file (path or URI).

    Raises :class:`ConfigError` naming ``where`` (the config field) when the table cannot be read or is malformed.
    """
    if isinstance(spec, Mapping):
        mapping: dict[int, int] = {}
        for k, v in spec.items():
            _add(mapping, k, v, where)
        if not mapping:
            raise ConfigError(f"{where}: the inline mapping is empty; give {{source_id: target_id, ...}} or remove it")
        remap = LabelRemap(mapping, f"inline:{_digest(mapping)[:12]}", where=where)
    elif isinstance(spec, str) and spec in TABLES:
        table = TABLES[spec]
        text = resources.files(__package__).joinpath("label_tables", table.file).read_text(encoding="utf-8")
        mapping, src_names, dst_names = parse_remap_text(text, f"{where} ({spec})")
        remap = LabelRemap(mapping, table.name, src_names, dst_names, table.target_preset, where=where)
    elif isinstance(spec, str) and spec.strip():
        from .fs import open_uri

        try:
            with open_uri(spec, "rb") as f:
                text = f.read().decode("utf-8")
        except FileNotFoundError:
            raise ConfigError(
                f"{where}: {spec!r} is neither a table shipped with spadepis ({', '.join(TABLES)}) nor an existing "
                "file; give one of those names, a CSV/YAML file 'source_id,target_id[,name]', or an inline mapping "
                "{source_id: target_id}"
            ) from None
        except Exception as exc:  # noqa: BLE001 - any read failure is a config problem to report
            raise ConfigError(f"{where}: cannot read {spec!r} ({type(exc).__name__}: {exc})") from None
        mapping, src_names, dst_names = parse_remap_text(text, f"{where} ({spec})")
        name = spec.rstrip("/").rsplit("/", 1)[-1]
        remap = LabelRemap(mapping, f"{name}@{_digest(mapping)[:12]}", src_names, dst_names, where=where)
    else:
        raise ConfigError(f"{where}: expected a table name ({', '.join(TABLES)}), a file, or a mapping; got {spec!r}")
    return remap.with_unmapped(unmapped)


def scan_ids(uris: list[str]) -> tuple[dict[int, int], list[str]]:
    """``({id: number of maps holding it}, errors)`` over the label maps ``uris`` (ids as stored, no preset)."""
    from .labelmaps import read_id_map

    counts: dict[int, int] = {}
    errors = []
    for uri in uris:
        try:
            ids = np.unique(read_id_map(uri))
        except InputError as exc:
            errors.append(str(exc))
            continue
        for v in ids.tolist():
            counts[v] = counts.get(v, 0) + 1
    return dict(sorted(counts.items())), errors
