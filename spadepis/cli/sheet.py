"""``spadepis sheet``: a run's contact sheet."""

from __future__ import annotations

import sys

from ..errors import ConfigError


RUN_SHEET_ROWS = 32  # `spadepis run` shows the first sources; `spadepis sheet RUN --max-rows N` shows more


def write_sheet(run_uri: str, out: str | None, *, max_rows: int | None) -> str | None:
    """Write ``<run>/contact_sheet.png`` (or ``out``); a failure is reported, never fatal for a finished run."""
    from ..pipeline.sheet import contact_sheet

    out = out or f"{str(run_uri).rstrip('/')}/contact_sheet.png"
    try:
        contact_sheet(run_uri, out, max_rows=max_rows)
    except Exception as exc:  # noqa: BLE001 - the run's data is committed; the picture is a convenience
        print(f"could not write the contact sheet {out}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None
    return out


def _cmd_sheet(args) -> int:
    from ..pipeline.storage import RunStorage
    from ._pipeline_args import use_run_storage_options

    use_run_storage_options(args)
    try:
        RunStorage(args.run_uri).read_manifest()
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from None
    out = write_sheet(args.run_uri, args.out, max_rows=args.max_rows or None)
    if out is None:
        return 1
    print(out)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sheet", help="draw a run's contact sheet (style photos, then per source: label map | synthesized | outputs)",
        description="Draw the contact sheet of a run: a header row with the style photos, then one row per source "
        "with its id, label map (coloured), synthesized image and one output per style; when sources got their own "
        "styles (styles.select random/semantic), each output sits beside its style photo, in rank order, with its scores.",
    )
    p.add_argument("run_uri", help="<output>/<run_id> of a run (local path or fsspec URI)")
    p.add_argument("--out", help="where to write the PNG (path or URI; default <run>/contact_sheet.png)")
    p.add_argument("--max-rows", type=int, default=64, help="sources to show (default 64; 0 = all)")
    from ._pipeline_args import add_storage_options_arg

    add_storage_options_arg(p)
    p.set_defaults(func=_cmd_sheet)
