"""``e2ae-mediad`` / ``python -m mediad``: run the media daemon in the foreground.

Reads the configuration (``--config`` or ``$E2AE_CONFIG``), uses uvloop when it
is installed, serves until SIGTERM or SIGINT, then closes its ports and leaves
the dialogs' state in Redis for the next start.  In a pool (``[mediad]
node_id``), SIGUSR1 drains it: it keeps its calls and gets no new ones.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from sdp_rules.errors import E2aeError

from mediad.config import load_config
from mediad.daemon import Daemon
from mediad.logs import formatter


async def serve(config) -> None:
    daemon = Daemon(config)
    await daemon.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if daemon.heartbeat is not None:
        loop.add_signal_handler(signal.SIGUSR1, daemon.heartbeat.drain)  # no new calls (mediad.pool)
    try:
        await stop.wait()
    finally:
        await daemon.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="e2ae-mediad", description="e2ae edge media daemon")
    parser.add_argument("--config", help="configuration file (default: $E2AE_CONFIG, else built-in defaults)")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except E2aeError as exc:
        print(f"e2ae-mediad: {exc}", file=sys.stderr)
        return 2
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(config.mediad_log_format, "%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.basicConfig(level=getattr(logging, config.mediad_log_level, logging.INFO), handlers=[handler])
    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    try:
        runner(serve(config))
    except E2aeError as exc:
        logging.getLogger("mediad").error("cannot start: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
