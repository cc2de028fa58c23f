"""The `pynet` command."""

from __future__ import annotations

import argparse
import asyncio
import sys

from . import __version__
from .config import add_serve_arguments, config_from_args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pynet", description="Docker network and IPAM plugin")
    parser.add_argument("--version", action="version", version=f"pynet {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the plugin")
    add_serve_arguments(serve)
    args = parser.parse_args(argv)

    if args.command == "serve":
        from .app import serve as run, setup_logging
        config = config_from_args(args)
        setup_logging(config.log_level, config.log_format)
        asyncio.run(run(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
