"""Command-line interface: ``ltemfactory <command> ...``.

Every workflow rule calls one of these commands from its ``shell:`` directive. Errors in user
input (configs, files) end with exit status 2 and one clear message naming the field or file.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ltemfactory import __version__
from ltemfactory.errors import LtemfactoryError

log = logging.getLogger("ltemfactory")


def _cmd_config_check(args: argparse.Namespace) -> int:
    from ltemfactory.config import load_config

    for path in args.files:
        load_config(path)
        print(f"{path}: OK")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ltemfactory", description=__doc__)
    parser.add_argument("--version", action="version", version=f"ltemfactory {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    config = sub.add_parser("config", help="configuration utilities")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help="validate config files against the schema")
    check.add_argument("files", nargs="+", type=Path)
    check.set_defaults(func=_cmd_config_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except (LtemfactoryError, FileNotFoundError) as exc:
        print(f"ltemfactory {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
