#!/usr/bin/env python3
"""The echo bot on asyncio (libsim.aio): logs in and sends every message back to whoever sent it, while another
task reports the unread count of the inbox now and then.

    async_echo_bot.py --port 7878 --user echo        (password from $SIM_PASSWORD or a prompt; Ctrl-C stops it)

Options as for echo_bot.py (the same parser).
"""

import argparse
import asyncio
import sys

from echo_bot import announce, parse_args  # the same command line and messages

import libsim
import libsim.aio


async def report_unread(bot: libsim.aio.AsyncClient, every: float) -> None:
    """Runs beside the echo loop on the same thread: the client never blocks the loop."""
    while True:
        await asyncio.sleep(every)
        print(f"{bot.inbox_status.unread} unread", file=sys.stderr, flush=True)


async def echo(args: argparse.Namespace, password: str, state: dict[str, object]) -> int:
    echoed = 0
    async with await libsim.aio.connect(args.host, args.port, **state) as bot:
        await bot.login(args.user, password)
        print(f"{args.user} is online", flush=True)
        reporter = asyncio.create_task(report_unread(bot, 5.0))
        async for event in bot:  # until the connection is gone
            announce(bot, event, args.accept_changed_keys)
            if isinstance(event, libsim.MessageEvent):
                await bot.send(event.peer, event.text)
                bot.mark_read(event.inbox_index + 1)
                echoed += 1
                if echoed == args.max_messages:
                    break
        reporter.cancel()
    return echoed


def main() -> int:
    args, password, state = parse_args(__doc__)
    try:
        echoed = asyncio.run(echo(args, password, state))
    except libsim.Error as e:
        print(f"async_echo_bot: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    print(f"echoed {echoed} messages", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
