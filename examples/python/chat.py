#!/usr/bin/env python3
"""A tiny chat client: log in, talk to one peer. Lines typed on stdin are sent; messages are printed.

    chat.py --port 7878 --user alice --peer bob        (the password comes from $SIM_PASSWORD or a prompt)

End to end (the server's default mode), the identity key, the ratchets and the pinned peers last across runs in a
file encrypted under the same password: libsim's default one for the user and server (under
$XDG_CONFIG_HOME/libsim/keys), or --state-file.
Compare the safety number with your peer's, out of band.
"""

import argparse
import getpass
import os
import sys
import threading
import time

import libsim


def show(client: libsim.Client) -> None:
    for event in client:  # until the connection is gone
        if isinstance(event, libsim.MessageEvent):
            print(f"{event.peer}: {event.text}", flush=True)
        elif isinstance(event, libsim.IdentityChangedEvent):
            print(f"* the identity key of {event.peer} changed; new safety number {event.safety_number}. Nothing "
                  "is sent to or shown from them in this session.", flush=True)
        elif isinstance(event, (libsim.PeerLeftEvent, libsim.ErrorEvent, libsim.GapEvent)):
            print(f"* {event}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7878)
    parser.add_argument("--user", required=True)
    parser.add_argument("--peer", required=True)
    parser.add_argument("--linger", type=float, default=1.0, help="seconds to wait for replies after end of input")
    parser.add_argument("--state-file", help="end-to-end state, encrypted under the password (created if missing)")
    args = parser.parse_args()
    password = os.environ.get("SIM_PASSWORD") or getpass.getpass(f"password for {args.user}: ")
    state: dict[str, object] = {"user": args.user, "state_password": password}
    if args.state_file:
        state["state_file"] = args.state_file

    try:
        with libsim.Client(args.host, args.port, **state) as client:
            print(f"server fingerprint {client.server_fingerprint}", flush=True)
            client.login(args.user, password, args.peer)
            for event in client.events(timeout=300):
                if isinstance(event, libsim.WaitingEvent):
                    print(f"{args.peer} is offline; waiting...", flush=True)
                elif isinstance(event, libsim.KeyAssignedEvent) and event.peer == args.peer:
                    print(f"talking to {args.peer} ({event.suite.display_name}, {event.mode.display_name})",
                          flush=True)
                    if event.mode == libsim.ConversationMode.END_TO_END:
                        print(f"safety number {event.safety_number}", flush=True)
                    break
                elif isinstance(event, libsim.IdentityChangedEvent) and event.peer == args.peer:
                    print(f"chat: the identity key of {args.peer} changed (new safety number {event.safety_number})",
                          file=sys.stderr)
                    return 1
                elif isinstance(event, libsim.ErrorEvent) and event.peer == args.peer:
                    print(f"chat: {event.error}", file=sys.stderr)
                    return 1
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
