#!/usr/bin/python3
"""`sim chat` full screen in pseudo-terminals: two chats against a real simd on an ephemeral port.

Types a message in one and finds it on the other's screen, pastes a multi-line text starting with '/' (bracketed
paste) and checks that it arrives as one message and that no command ran, resizes a window, types a lone Esc (not
taken as Alt with the next key), completes a name and a command with Tab, shows /history, and quits with /quit.
Standard library only. Usage: chat_pty.py SIMD SIM
"""

import fcntl
import os
import pty
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import time

TIMEOUT = 20.0
# CSI (with the cursor moves that start a new place on the screen kept as line breaks), OSC, and two-byte escapes.
CURSOR_MOVE = re.compile(rb"\x1b\[[0-9;]*[Hdf]")
ESCAPE = re.compile(rb"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[=>78cM]")


def fail(message, *chats):
    print("FAIL: " + message, file=sys.stderr)
    for chat in chats:
        print("--- screen output of " + chat.name, file=sys.stderr)
        print(chat.text()[-3000:], file=sys.stderr)
    sys.exit(1)


def set_size(fd, rows, cols):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class Chat:
    """One `sim chat` in a pseudo-terminal, with everything it wrote."""

    def __init__(self, name, argv, env):
        self.name = name
        self.master, slave = pty.openpty()
        set_size(slave, 24, 80)
        self.proc = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        os.close(slave)
        self.out = b""

    def pump(self, wait):
        ready, _, _ = select.select([self.master], [], [], wait)
        if ready:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: the child closed the terminal
                data = b""
            self.out += data
            return bool(data)
        return False

    def text(self, since=0):
        raw = CURSOR_MOVE.sub(b"\n", self.out[since:])
        return ESCAPE.sub(b"", raw).replace(b"\r", b"").decode("utf-8", "replace")

    def wait_for(self, pattern, since=0, others=()):
        """Until the screen output (escapes stripped) after byte `since` matches the regular expression."""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if re.search(pattern, self.text(since)):
                return
            for other in others:
                other.pump(0)
            if not self.pump(0.2) and self.proc.poll() is not None:
                break
        fail(f"{self.name}: no {pattern!r} on the screen", self)

    def type(self, data):
        os.write(self.master, data)

    def wait_exit(self):
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            self.pump(0.1)
            if self.proc.poll() is not None:
                return self.proc.returncode
        fail(f"{self.name} did not exit", self)


def pause(seconds, chats):
    """Waits, reading what the chats write meanwhile."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for c in chats:
            c.pump(0.05)


def main():
    simd, sim = sys.argv[1], sys.argv[2]
    tmp = tempfile.mkdtemp(prefix="chat-pty-")
    procs = []
    try:
        env = dict(os.environ, XDG_CONFIG_HOME=tmp + "/cfg", HOME=tmp + "/home", TERM="xterm-256color",
                   LANG="C.UTF-8", LC_ALL="C.UTF-8")
        env.pop("SIM_PASSWORD", None)
        port_file = tmp + "/simd.port"
        server = subprocess.Popen(
            [simd, "--listen", "127.0.0.1:0", "--port-file", port_file, "--data-dir", tmp + "/srv",
             "--bcrypt-cost", "4", "--log-level", "warning"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        procs.append(server)
        deadline = time.monotonic() + TIMEOUT
        while not (os.path.exists(port_file) and os.path.getsize(port_file) > 0):
            if time.monotonic() > deadline or server.poll() is not None:
                fail("simd did not write its port file")
            time.sleep(0.05)
        with open(port_file) as f:
            port = f.read().strip()

        def chat(user, peer):
            c = Chat(user, [sim, "--server", "127.0.0.1:" + port, "--trust", "tofu", "chat", user, peer],
                     dict(env, SIM_PASSWORD=user + " password"))
            procs.append(c.proc)
            return c

        alice = chat("alice", "bob")
        alice.wait_for(r"connected")
        bob = chat("bob", "alice")
        both = (alice, bob)
        for c in both:
            c.wait_for(r"end-to-end", others=both)

        # Presence: each named the other at login, so each is the other's contact; an online one has '*' in the
        # conversation list (read after a full repaint, Ctrl-L, so that the line is drawn whole).
        pause(0.5, both)
        mark = len(alice.out)
        alice.type(b"\x0c")
        alice.wait_for(r"> bob \*", since=mark, others=both)

        # A typed line is one message on the other screen.
        alice.type(b"ping-from-alice-7\r")
        bob.wait_for(r"ping-from-alice-7", others=both)

        # A paste: one message, its leading '/' is text, its newline stays a line break.
        mark = len(bob.out)
        alice.type(b"\x1b[200~/quit\rsecond-line-of-paste\x1b[201~")
        bob.wait_for(r"second-line-of-paste", since=mark, others=both)
        if alice.proc.poll() is not None:
            fail("a pasted /quit ran as a command", alice, bob)
        # Repaint bob's whole screen (Ctrl-L): the paste is one '[alice]' entry over two lines.
        mark = len(bob.out)
        bob.type(b"\x0c")
        bob.wait_for(r"\[alice\] /quit[^\n]*\n[^\n\[]*second-line-of-paste", since=mark, others=both)

        # A resize redraws the screen and the chat goes on.
        mark = len(alice.out)
        set_size(alice.master, 30, 100)
        os.kill(alice.proc.pid, signal.SIGWINCH)
        alice.wait_for(r"connected", since=mark, others=both)
        alice.type(b"after-resize-9\r")
        bob.wait_for(r"after-resize-9", others=both)

        # A lone Esc is the Esc key: a key typed after it is itself, not Alt-key (which would eat the 'e').
        alice.type(b"\x1b")
        pause(0.3, both)
        alice.type(b"esc-then-text-3\r")
        bob.wait_for(r"\[alice\] esc-then-text-3", others=both)

        # Tab completes a name at the start of a message...
        bob.type(b"ali\tsaw-it\r")
        alice.wait_for(r"\[bob\] alice: saw-it", others=both)
        # ... and a command; /history shows the inbox's last messages in the message pane.
        mark = len(bob.out)
        bob.type(b"/hist\t1\r")
        pause(0.5, both)
        bob.type(b"\x0c")
        bob.wait_for(r"the last 1 message\(s\) from alice in the inbox:[\s\S]{0,300}?\[alice\] esc-then-text-3",
                     since=mark, others=both)

        for c in both:
            c.type(b"/quit\r")
        for c in both:
            status = c.wait_exit()
            if status != 0:
                fail(f"{c.name} exited with {status}", c)
        print("ok")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
