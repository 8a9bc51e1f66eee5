"""The `mcm` command line: parse, load config, call one function per command.

Each command lives in ``mcm.commands.<name>`` as a module with ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Commands are imported only when used,
so ``mcm --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "demo": "distil, sample and evaluate on the built-in world (offline, CPU, minutes)",
    "train": "distil a student from a teacher with a YAML config (accelerate-aware)",
    "generate": "sample videos from a teacher or a distilled student",
    "evaluate": "compute world metrics / FVD / CLIPSIM / frame FID for a folder of videos",
    "world": "render the built-in world's data domains, build its teacher and probes",
    "data": "check, pack and cache video/image datasets",
    "export": "export a trained student as a diffusers LoRA and a merged pipeline",
}


def _command_module(name: str):
    try:
        return importlib.import_module(f"mcm.commands.{name}")
    except ModuleNotFoundError as e:
        if e.name == f"mcm.commands.{name}":
            return None
        raise


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mcm",
        description="Motion Consistency Model: distil text-to-video diffusion into 1-8 steps.",
    )
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return args.handler(args)
