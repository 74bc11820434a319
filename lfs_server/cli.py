"""The `lfs-server` command."""

from __future__ import annotations

import argparse
import sys

from lfs_server.settings import SETTINGS, Settings, SettingsError


def settings_help() -> str:
    rows = [
        f"  {name:<26} {desc} (default: {default})" for name, (default, desc) in SETTINGS.items()
    ]
    return "settings (environment variables):\n" + "\n".join(rows)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lfs-server",
        description="A self-hosted Git LFS server: nginx moves the bytes, Flask decides.",
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("serve", help="run nginx and gunicorn in the foreground")
    commands.add_parser("check-config", help="validate the settings and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"lfs-server: bad setting {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print(f"lfs-server: configuration is valid; serving {settings.public_url}")
        return 0
    from lfs_server.serve import serve

    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
