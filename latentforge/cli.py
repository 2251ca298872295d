"""The `latentforge` command. Each sub-command lives in `latentforge/commands/` and imports its heavy
dependencies only when it runs, so `latentforge --help` and the first image stay quick."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

from latentforge import __version__
from latentforge.commands import evaluate, export, generate, train

# Each module has `register(subparsers)`, which adds its parsers with `set_defaults(run=...)`.
COMMAND_MODULES = (export, train, generate, evaluate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="latentforge",
        description="Latent text-to-image diffusion: generate, train, evaluate and export models.",
    )
    parser.add_argument("--version", action="version", version=f"latentforge {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def one_line(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"latentforge {args.command}: warning: {message}", file=sys.stderr)

    warnings.showwarning = one_line  # a warning is for the user: no source path and code line
    try:
        return int(args.run(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        # Bad input: one clear line, no traceback.
        print(f"latentforge {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: one line and the shell's exit code, not a traceback from inside torch
        print(f"latentforge {args.command}: interrupted", file=sys.stderr)
        return 130
