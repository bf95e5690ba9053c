"""Run the loopback LiveKit server: ``python -m tests.lkserver --host 127.0.0.1 --port 7880 --keys devkey:secret``.

Prints one line, ``lkserver ready on ws://HOST:PORT``, once it accepts connections, and runs
until interrupted (SIGINT/SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from .server import LiveKitServer, ServerOptions


def parse_key(value: str) -> tuple[str, str]:
    key, sep, secret = value.partition(":")
    if not sep or not key or not secret:
        raise argparse.ArgumentTypeError(f"expected KEY:SECRET, got {value!r}")
    return key, secret


def parse_args(argv: list[str]) -> ServerOptions:
    parser = argparse.ArgumentParser(prog="python -m tests.lkserver", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7880)
    parser.add_argument(
        "--keys", type=parse_key, action="append", metavar="KEY:SECRET", help="API key and secret (repeatable)"
    )
    parser.add_argument(
        "--no-single-pc",
        dest="single_pc",
        action="store_false",
        help="answer 404 on /rtc/v1 so clients fall back to /rtc (two peer connections)",
    )
    parser.add_argument(
        "--legacy-protocol",
        action="store_true",
        help="announce participants with client_protocol 0, so SDKs use RPC v1 between them",
    )
    parser.add_argument("--log-level", default="WARNING", help="logging level (default WARNING)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    keys = tuple(args.keys or [("devkey", "secret")])
    return ServerOptions(
        host=args.host,
        port=args.port,
        keys=keys,
        single_pc=args.single_pc,
        legacy_protocol=args.legacy_protocol,
    )


async def serve(options: ServerOptions) -> None:
    server = LiveKitServer(options)
    await server.start()
    print(f"lkserver ready on {server.url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> None:
    asyncio.run(serve(parse_args(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    main()
