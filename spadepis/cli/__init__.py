"""The ``spadepis`` command: one subcommand module per area, each with ``register(subparsers)``."""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import SpadepisError
from ._prefect_server import default_startup_deadline, is_startup_timeout, startup_timeout_message

# Subcommand modules, in help order. Each defines register(subparsers) and sets func on its parsers.
_COMMAND_MODULES = ["synthesize", "stylize", "smooth", "run", "check", "summary", "verify", "gc", "sheet", "demo", "deploy", "version"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spadepis",
        description="Generate segmentation training data: SPADE synthesis + photorealistic stylization.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    default_startup_deadline()  # before any command imports Prefect
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except SpadepisError as exc:
        print(f"spadepis {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        if not is_startup_timeout(exc):
            raise
        print(startup_timeout_message(args.command), file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
