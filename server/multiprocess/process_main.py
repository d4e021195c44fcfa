"""The processes a supervisor starts: ``python -m server.multiprocess.process_main engine|frontend``."""

from __future__ import annotations

import argparse

from server.observability.logs import configure_logging
from server.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["engine", "frontend"])
    parser.add_argument("--settings", required=True, help="the supervisor's Settings as JSON")
    parser.add_argument("--socket", required=True)
    parser.add_argument("--shm-prefix", required=True)
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--restarts", type=int, default=0, help="engine: how many engines stopped before this one")
    parser.add_argument("--workers-dir", help="engine: where process workers outlive it (the supervisor's)")
    args = parser.parse_args()
    settings = Settings.model_validate_json(args.settings)
    configure_logging(settings.log_level, settings.log_format, args.role, args.index)
    if args.role == "engine":
        import uvloop

        from server.multiprocess.engine import Engine

        uvloop.run(Engine(settings, args.socket, args.shm_prefix, args.restarts, args.workers_dir).serve())
    else:
        from server.http.server import run_http
        from server.multiprocess.remote import EngineClient
        from server.multiprocess.supervisor import reuseport_socket

        sock = reuseport_socket(settings.host, settings.port)
        run_http(settings, EngineClient(settings, args.socket, args.shm_prefix, args.index), sock)


if __name__ == "__main__":
    main()
