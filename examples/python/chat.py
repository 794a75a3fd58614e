#!/usr/bin/env python3
"""A tiny chat client: log in, talk to one peer. Lines typed on stdin are sent; messages are printed.

    chat.py --port 7878 --user alice --peer bob        (the password comes from $SIM_PASSWORD or a prompt)
"""

import argparse
import getpass
import os
import sys
import threading
import time

import libsim
from libsim import EventKind


def show(client: libsim.Client) -> None:
    for event in client:  # until the connection is gone
        if event.kind == EventKind.MESSAGE:
            print(f"{event.peer}: {event.text}", flush=True)
        elif event.kind in (EventKind.PEER_LEFT, EventKind.ERROR, EventKind.KEY_ROTATED):
            print(f"* {event}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7878)
    parser.add_argument("--user", required=True)
    parser.add_argument("--peer", required=True)
    parser.add_argument("--linger", type=float, default=1.0, help="seconds to wait for replies after end of input")
    args = parser.parse_args()
    password = os.environ.get("SIM_PASSWORD") or getpass.getpass(f"password for {args.user}: ")

    try:
        with libsim.Client(args.host, args.port) as client:
            print(f"server fingerprint {client.server_fingerprint}", flush=True)
            client.login(args.user, password, args.peer)
            for event in client.events(timeout=300):
                if event.kind == EventKind.WAITING:
                    print(f"{args.peer} is offline; waiting...", flush=True)
                elif event.kind == EventKind.KEY_ASSIGNED and event.peer == args.peer:
                    print(f"talking to {args.peer} ({event.suite.display_name})", flush=True)
                    break
            else:
                print(f"chat: {args.peer} did not come online", file=sys.stderr)
                return 1
            printer = threading.Thread(target=show, args=(client,), daemon=True)
            printer.start()
            for line in sys.stdin:
                client.send(args.peer, line.rstrip("\n"))
            time.sleep(args.linger)
            client.logout()
        printer.join(timeout=5)  # the client is closed: its event iteration has ended
    except libsim.Error as e:
        print(f"chat: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
