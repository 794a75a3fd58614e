#!/usr/bin/env python3
"""An echo bot: logs in and sends every message back to whoever sent it.

    echo_bot.py --port 7878 --user echo        (password from $SIM_PASSWORD or a prompt; Ctrl-C stops it)

The bot's end-to-end identity lasts across runs: libsim keeps it in a file encrypted under the password, by default
one per user and server under $XDG_CONFIG_HOME/libsim/keys (--state-file names another). A peer whose identity key
changes is ignored unless --accept-changed-keys is given (fine for a demo bot, not for people).
"""

import argparse
import getpass
import os
import sys
from typing import Any

import libsim


def parse_args(description: str) -> tuple[argparse.Namespace, str, dict[str, object]]:
    """The command line (also async_echo_bot.py's): the options, the password, the Client options of the state."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7878)
    parser.add_argument("--user", default="echo")
    parser.add_argument("--max-messages", type=int, default=0, help="stop after echoing this many (0: never)")
    parser.add_argument("--state-file", help="end-to-end state, encrypted under the password (created if missing; "
                        "default: libsim's file for the user and server)")
    parser.add_argument("--accept-changed-keys", action="store_true", help="accept a peer's new identity key")
    args = parser.parse_args()
    password = os.environ.get("SIM_PASSWORD") or getpass.getpass(f"password for {args.user}: ")
    state: dict[str, object] = {"user": args.user, "state_password": password}
    if args.state_file:
        state["state_file"] = args.state_file
    return args, password, state


def announce(bot: Any, event: libsim.Event, accept_changed_keys: bool) -> None:
    """Say when a conversation starts or a peer's key changes (accepting the key if asked to); `bot` is a Client or
    a libsim.aio.AsyncClient."""
    if isinstance(event, libsim.KeyAssignedEvent):
        print(f"talking to {event.peer}", flush=True)
    elif isinstance(event, libsim.IdentityChangedEvent):
        print(f"identity key of {event.peer} changed", flush=True)
        if accept_changed_keys:
            bot.accept_identity(event.peer)


def main() -> int:
    args, password, state = parse_args(__doc__)

    echoed = 0
    try:
        with libsim.Client(args.host, args.port, **state) as bot:
            bot.login(args.user, password)
            print(f"{args.user} is online", flush=True)
            for event in bot:
                announce(bot, event, args.accept_changed_keys)
                if isinstance(event, libsim.MessageEvent):
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
