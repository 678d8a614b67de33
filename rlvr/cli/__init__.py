"""The ``rlvr`` command. Each subcommand lives in its own module with ``add_parser(sub)`` which
registers it and sets ``func`` to the handler ``(args) -> int`` (module ``rollout_server_cmd``
registers ``rollout-server``)."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand module, in the order ``rlvr --help`` lists them
COMMANDS = ("train", "eval", "view", "verify", "list", "index", "serve", "rollout_server", "sandbox")
# what `rlvr train` with no config runs: the embedded default job
DEFAULT_JOB = "default"


def build_parser() -> argparse.ArgumentParser:
    from rlvr import __version__

    parser = argparse.ArgumentParser(
        prog="rlvr", description="Reinforcement learning of language models from verifiable rewards.")
    parser.add_argument("--version", action="version", version=f"rlvr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"rlvr.cli.{name}_cmd")
        except ModuleNotFoundError as e:
            if e.name == f"rlvr.cli.{name}_cmd":
                continue  # command not part of this build
            raise
        mod.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from rlvr.core.registry import PluginLoadError

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train" and (len(argv) == 1 or argv[1].startswith("-")):
        # no config: every `--key value` pair is an override of the default job (without this,
        # argparse would take the first override's value for the optional config argument)
        argv.insert(1, DEFAULT_JOB)
    args, rest = parser.parse_known_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    if rest and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.overrides = rest
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, KeyError, FileNotFoundError, TypeError, PluginLoadError) as e:
        # PluginLoadError: a plugin asked for by name whose entry point fails to import
        if getattr(args, "debug", False):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"rlvr {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
