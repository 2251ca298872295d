"""The `latentforge` command. Each sub-command lives in `latentforge/commands/` and imports its heavy
dependencies only when it runs, after its arguments and config files are checked, so `latentforge --help`,
the first image and every mistake stay quick."""

from __future__ import annotations

import argparse
import errno
import sys
import warnings
from collections.abc import Sequence

from latentforge import __version__
from latentforge.atomic_files import is_said
from latentforge.commands import evaluate, export, generate, train

# Each module has `register(subparsers)`, which adds its parsers with `set_defaults(run=...)`.
COMMAND_MODULES = (generate, train, evaluate, export)


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


def parse_arguments(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parsed arguments; KEY=VALUE items after an option join the command's overrides (argparse alone
    cannot take positionals on both sides of an option)."""
    args, extra = parser.parse_known_args(argv)
    if hasattr(args, "overrides"):  # the command checks them, naming any that is not KEY=VALUE
        args.overrides = [*args.overrides, *(item for item in extra if not item.startswith("-"))]
        extra = [item for item in extra if item.startswith("-")]
    if extra:
        hint = " (quote a prompt of several words)" if args.command in generate.TASKS else ""
        parser.error(f"{args.command}: unrecognized arguments: {' '.join(extra)}{hint}")
    return args


# a full disk, a quota or a file-size limit: the writer says what is intact, the command says it in one line
FULL_DISK = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_arguments(build_parser(), argv)

    def one_line(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"latentforge {args.command}: warning: {message}", file=sys.stderr)

    warnings.showwarning = one_line  # a warning is for the user: no source path and code line
    try:
        return int(args.run(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError) as err:
        # Bad input: one clear line, no traceback.
        print(f"latentforge {args.command}: error: {err}", file=sys.stderr)
        return 2
    except (PermissionError, IsADirectoryError) as err:  # a read-only output folder, an unreadable input
        hint = "" if is_said(err) else "; check the path and its permissions"  # a failed write says its own
        print(f"latentforge {args.command}: error: {err}{hint}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.errno not in FULL_DISK:
            raise
        hint = "" if "free some space" in str(err) else "; free some space there and run again"
        where = f" ({err.filename})" if err.filename and err.strerror else ""
        print(f"latentforge {args.command}: error: {err.strerror or err}{where}{hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # Ctrl-C: one line and the shell's exit code, not a traceback from torch
        # a training run says where it saved its checkpoint, and a SIGTERM gives 143
        detail = f": {err}" if str(err) else ""
        print(f"latentforge {args.command}: interrupted{detail}", file=sys.stderr)
        return int(getattr(err, "exit_code", 130))
