"""The `video2mp3` command: `up` runs everything locally, `serve NAME` runs one service,
`login` and `convert` talk to a running server."""

from __future__ import annotations

import argparse
import sys

from services.cli.credentials import DEFAULT_SERVER, resolve_server
from shared.options import ConversionOptions

SERVICES = ("gateway", "auth", "converter", "notification")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="video2mp3", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="run every service locally, with embedded defaults")
    serve = commands.add_parser("serve", help="run one service")
    serve.add_argument("name", choices=SERVICES)
    serve.add_argument("--port", type=int, default=None, help="override the service's port")
    serve.add_argument("--host", default=None, help="override BIND_HOST")
    server_help = (
        "the server's URL (default: VIDEO2MP3_SERVER, else the server of the last "
        f"`video2mp3 login`, else {DEFAULT_SERVER})"
    )
    convert = commands.add_parser("convert", help="convert files through a running server")
    convert.add_argument("files", nargs="+", metavar="FILE")
    convert.add_argument("-o", "--output-dir", default=None, help="where to write the MP3s")
    convert.add_argument("--server", help=server_help)
    convert.add_argument("--force", action="store_true", help="overwrite existing MP3s")
    options = convert.add_argument_group(
        "conversion options", "sent as the form fields of the same names (see the README)"
    )
    for name in ConversionOptions.model_fields:
        flag = "--" + name.replace("_", "-")
        if name == "normalize":
            options.add_argument(flag, dest=f"option_{name}", action="store_const", const="true")
        else:
            options.add_argument(flag, dest=f"option_{name}", metavar="VALUE")
    login = commands.add_parser(
        "login", help="log in once; keep a refresh token and remember the server"
    )
    login.add_argument("--server", help=server_help)
    admin = commands.add_parser("admin", help="the operator's account tools").add_subparsers(
        dest="admin_command", required=True
    )
    create_user = admin.add_parser("create-user", help="create an account, in every REGISTRATION")
    create_user.add_argument("email")
    create_user.add_argument("--admin", action="store_true", help="make it an admin")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from pydantic import ValidationError

    try:
        _run(args)
    except ValidationError as exc:
        if exc.title != "Settings":
            raise
        # Settings from the environment that do not hold: one line per setting, named as it
        # is set, and never the value (it may be a secret).
        for error in exc.errors():
            name = "_".join(str(part) for part in error["loc"]).upper()
            print(f"video2mp3: {name}: {error['msg']}", file=sys.stderr)
        sys.exit(2)


def _run(args: argparse.Namespace) -> None:
    if args.command == "serve":
        from services.cli.serve import serve

        sys.exit(serve(args.name, port=args.port, host=args.host))
    if args.command == "convert":
        from services.cli.convert import convert

        fields = {
            name: value
            for name in ConversionOptions.model_fields
            if (value := getattr(args, f"option_{name}")) is not None
        }
        server = resolve_server(args.server)
        sys.exit(convert(args.files, args.output_dir, server, args.force, fields))
    if args.command == "login":
        from services.cli.login import login

        sys.exit(login(resolve_server(args.server)))
    if args.command == "admin":
        from services.cli.admin import create_user_command

        sys.exit(create_user_command(args.email, args.admin))
    if args.command == "up":
        from services.cli.up import up

        sys.exit(up())


if __name__ == "__main__":
    main()
