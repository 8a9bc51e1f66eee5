"""The `mcm` command line: parse, load config, call one function per command.

Each command lives in ``mcm.commands.<name>`` as a module with ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Commands are imported only when used,
so ``mcm --help`` stays fast.

One error boundary for every command (:func:`main`): a user error (a bad argument, config
value, path, data or checkpoint: :class:`mcm.errors.UserError`, or an ``OSError`` about a
path such as ``FileNotFoundError``) is printed as ``mcm COMMAND: message`` and exits with
status 2; anything else is a bug and keeps its traceback. Argument errors are argparse's,
in one line.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from mcm import __version__
from mcm.errors import UserError

COMMANDS = {
    "demo": "distil, sample and evaluate on the built-in world (offline, CPU, minutes)",
    "train": "distil a student from a teacher with a YAML config (accelerate-aware)",
    "generate": "sample videos from a teacher or a distilled student",
    "evaluate": "compute world metrics / FVD / CLIPSIM / frame FID for a folder of videos",
    "world": "render the built-in world's data domains, build its teacher and probes",
    "data": "check, pack and cache video/image datasets",
    "export": "export a trained student as a diffusers LoRA and a merged pipeline",
    "decoder": "distil a tiny preview decoder from a teacher's VAE (fast previews)",
    "app": "a web app: a teacher and its students side by side on one prompt and seed",
}

# What a user can fix: our own UserError, and the OS's errors about a path they named.
USER_ERRORS = (
    UserError,
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)


class Parser(argparse.ArgumentParser):
    """argparse, with its errors in one line (no usage block) that point to --help."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see '{self.prog} --help')\n")


def _command_module(name: str):
    try:
        return importlib.import_module(f"mcm.commands.{name}")
    except ModuleNotFoundError as e:
        if e.name == f"mcm.commands.{name}":
            return None
        raise


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = Parser(
        prog="mcm",
        description="Motion Consistency Model: distil text-to-video diffusion into 1-8 steps.",
    )
    parser.add_argument("--version", action="version", version=f"mcm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        module = _command_module(name) if name == chosen else None
        if module is not None:
            module.add_arguments(p)
            p.set_defaults(handler=module.run)
        else:
            p.set_defaults(handler=_not_built(name))
    return parser


def _not_built(name: str):
    def handler(args: argparse.Namespace) -> int:
        print(f"mcm {name}: not built yet in this version.", file=sys.stderr)
        return 2

    return handler


def user_message(error: BaseException) -> str:
    """The message of a user error; an OSError without one names its path."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        return f"{error.strerror}: {str(error.filename)!r}"
    return str(error) or type(error).__name__


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0), or a bad argument (2, already printed)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    if args.command is None:
        parser.print_help()
        return 0
    name = " ".join(
        ["mcm", args.command, *[getattr(args, f"{args.command}_command", None) or ""]]
    ).strip()
    try:
        return args.handler(args)
    except USER_ERRORS as e:
        for line in user_message(e).splitlines():
            print(f"{name}: {line}", file=sys.stderr)
        return 2
