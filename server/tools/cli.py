"""``batchserve serve | demo-models | convert | bench | gpu-check``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any, get_origin

from server.settings import Settings


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    for name, field in Settings.model_fields.items():
        env = f"BATCHSERVE_{name.upper()}"
        help_text = f"{field.description or ''} [env {env}; default {field.default!r}]".strip()
        help_text = help_text.replace("%", "%%")  # argparse formats help with %: "2 % of slo_ms" is no format
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, metavar="VALUE", help=help_text)


def _settings_from(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    for name, field in Settings.model_fields.items():
        value = getattr(args, name, None)
        if value is None:
            continue
        if name == "frontends" and value != "auto":
            value = int(value)
        elif get_origin(field.annotation) is list:
            value = [int(v) for v in value.split(",") if v.strip()]
        overrides[name] = value
    return Settings(**overrides)


def _serve(args: argparse.Namespace) -> int:
    settings = _settings_from(args)
    from server.multiprocess.supervisor import Supervisor, frontend_count
    from server.observability.logs import configure_logging

    several = frontend_count(settings) > 1
    configure_logging(settings.log_level, settings.log_format, "supervisor" if several else "server")
    if several:
        return Supervisor(settings).run()
    from server.http.server import run_http

    run_http(settings)
    return 0


def _demo_models(args: argparse.Namespace) -> int:
    from server.tools.demo_models import build_demo_models

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    report = build_demo_models(args.directory, args.models or None, force=args.force)
    for name, figures in report.items():
        print(f"{name}: held-out precision {figures['precision']:.3f}, recall {figures['recall']:.3f}, "
              f"accuracy {figures['accuracy']:.3f} on {int(figures['held_out'])} messages")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="batchserve", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the model repository over HTTP")
    _add_settings_flags(serve)
    serve.set_defaults(run=_serve)

    from server.tools.demo_models import MODELS

    demo = commands.add_parser("demo-models", help=f"build the demo SavedModels ({', '.join(MODELS)})")
    demo.add_argument("directory")
    demo.add_argument("--models", nargs="*", choices=MODELS)
    demo.add_argument("--force", action="store_true", help="rebuild models that exist")
    demo.set_defaults(run=_demo_models)

    from load_tests.bench import add_bench_command
    from server.tools.convert.cli import add_convert_commands
    from server.tools.gpu_check import add_gpu_check_command

    add_convert_commands(commands)
    add_gpu_check_command(commands)
    add_bench_command(commands)

    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
