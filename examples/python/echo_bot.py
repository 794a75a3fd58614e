#!/usr/bin/env python3
"""An echo bot: logs in and sends every message back to whoever sent it.

    echo_bot.py --port 7878 --user echo        (password from $SIM_PASSWORD or a prompt; Ctrl-C stops it)
"""

import argparse
import getpass
import os
import sys

import libsim
from libsim import EventKind


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7878)
    parser.add_argument("--user", default="echo")
    parser.add_argument("--max-messages", type=int, default=0, help="stop after echoing this many (0: never)")
    args = parser.parse_args()
    password = os.environ.get("SIM_PASSWORD") or getpass.getpass(f"password for {args.user}: ")

    echoed = 0
    try:
        with libsim.Client(args.host, args.port) as bot:
            bot.login(args.user, password)
            print(f"{args.user} is online", flush=True)
            for event in bot:
                if event.kind == EventKind.KEY_ASSIGNED:
                    print(f"talking to {event.peer}", flush=True)
                elif event.kind == EventKind.MESSAGE:
                    bot.send(event.peer, event.text)
                    echoed += 1
                    if echoed == args.max_messages:
                        break
    except libsim.Error as e:
        print(f"echo_bot: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    print(f"echoed {echoed} messages", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
