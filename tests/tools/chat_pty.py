#!/usr/bin/python3
"""`sim chat` full screen in pseudo-terminals, against a real simd on an ephemeral port. Four scenarios, each with
its own server and client state (a failure names the one that failed):

e2e-basics: two chats (end-to-end mode). Types a message in one and finds it on the other's screen, pastes a
  multi-line text starting with '/' (bracketed paste) and checks that it arrives as one message and that no command
  ran, resizes a window, types a lone Esc (not taken as Alt with the next key), completes a name and a command with
  Tab, shows /history, and quits with /quit.
server-assigned-conversations: a server in server-assigned mode and four chats. alice's status line says the
  conversation is readable by the server; she opens two more conversations with /open, and messages arriving in the
  background conversations show an unread count in her list (and, once a pair are contacts, '*'); Ctrl-N and
  Ctrl-P (both directions, wrapping round) and Alt-1 switch conversations, showing that conversation's messages
  only and clearing its count, and a line typed goes to the conversation switched to. The two who talk to nobody
  see alice's first message as an unread count until Ctrl-N / Ctrl-P makes her conversation current.
reconnect, reconnect-server-assigned: two chats (end-to-end, server-assigned mode); simd is killed: the chats go on,
  show the lost connection and `reconnecting in N s` in the status line; a line typed meanwhile is queued; simd
  restarts on the same port and data: the chats say `reconnected` and `connected`, the queued line is delivered,
  the chat goes on both ways, and nothing is shown twice.

The status line and the conversation list are updated in place by curses, so they are read from a full repaint
(Ctrl-L).
Standard library only. Usage: chat_pty.py SIMD SIM [SCENARIO...] (default: all). With CHAT_PTY_DUMP=DIR set, a
failure also writes each chat's whole output there (NAME.txt without escapes, NAME.raw as written).
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
CTRL_L, CTRL_N, CTRL_P = b"\x0c", b"\x0e", b"\x10"

# The scenario running, for the failure message, and its chats (whose screens a failure prints, and which every wait
# keeps reading so that none blocks on a full terminal).
current = {"scenario": "", "chats": []}


def fail(message):
    print(f"FAIL [{current['scenario']}]: {message}", file=sys.stderr)
    for chat in current["chats"]:
        print("--- screen output of " + chat.name, file=sys.stderr)
        print(chat.text()[-3000:], file=sys.stderr)
        if os.environ.get("CHAT_PTY_DUMP"):  # the whole output of each chat, to look into a failure
            with open(os.path.join(os.environ["CHAT_PTY_DUMP"], chat.name + ".txt"), "w") as f:
                f.write(chat.text())
            with open(os.path.join(os.environ["CHAT_PTY_DUMP"], chat.name + ".raw"), "wb") as f:
                f.write(chat.out)
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

    def mark(self):
        return len(self.out)

    def wait_for(self, pattern, since=0):
        """Until the screen output (escapes stripped) after byte `since` matches the regular expression."""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if re.search(pattern, self.text(since)):
                return
            for other in current["chats"]:
                if other is not self:
                    other.pump(0)
            if not self.pump(0.2) and self.proc.poll() is not None:
                break
        fail(f"{self.name}: no {pattern!r} on the screen")

    def repaint(self, pattern):
        """Until a full repaint of the screen (Ctrl-L, every quarter second), with what is drawn right after it, matches
        the regular expression; returns its text. For what curses updates in place (the status line, the list),
        which the output since some point shows only in pieces."""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            mark = self.mark()
            self.type(CTRL_L)
            until = time.monotonic() + 0.25
            while time.monotonic() < until:
                pause(0.05)
                if re.search(pattern, self.text(mark)):
                    pause(0.1)
                    return self.text(mark)
            if self.proc.poll() is not None:
                break
        fail(f"{self.name}: no {pattern!r} on the repainted screen")

    def type(self, data):
        os.write(self.master, data)

    def wait_exit(self):
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            self.pump(0.1)
            if self.proc.poll() is not None:
                return self.proc.returncode
        fail(f"{self.name} did not exit")

    def quit(self):
        self.type(b"/quit\r")
        status = self.wait_exit()
        if status != 0:
            fail(f"{self.name} exited with {status}")


def pause(seconds):
    """Waits, reading what the chats write meanwhile."""
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        chats = {c.master: c for c in current["chats"]}
        if not chats:
            time.sleep(left)
            return
        ready, _, _ = select.select(list(chats), [], [], min(left, 0.05))
        for fd in ready:
            chats[fd].pump(0)


def absent(text, pattern, what):
    if re.search(pattern, text):
        fail(what)


class Scenario:
    """A temporary directory with the client state, and the simd and chats it started: all stopped, removed at the
    end."""

    def __init__(self, simd, sim):
        self.simd, self.sim = simd, sim
        self.tmp = tempfile.mkdtemp(prefix="chat-pty-")
        self.procs = []
        self.env = dict(os.environ, XDG_CONFIG_HOME=self.tmp + "/cfg", HOME=self.tmp + "/home",
                        TERM="xterm-256color", LANG="C.UTF-8", LC_ALL="C.UTF-8")
        self.env.pop("SIM_PASSWORD", None)
        self.server = None
        self.port = None
        current["chats"] = []

    def start_simd(self, *args, port="0"):
        """simd with its data in the scenario's directory (the same data on a restart), on `port` (0: any)."""
        port_file = self.tmp + "/simd.port"
        if os.path.exists(port_file):
            os.unlink(port_file)
        self.server = subprocess.Popen(
            [self.simd, "--listen", "127.0.0.1:" + port, "--port-file", port_file, "--data-dir", self.tmp + "/srv",
             "--bcrypt-cost", "4", "--log-level", "warning", *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self.env)
        self.procs.append(self.server)
        deadline = time.monotonic() + TIMEOUT
        while not (os.path.exists(port_file) and os.path.getsize(port_file) > 0):
            if time.monotonic() > deadline or self.server.poll() is not None:
                fail("simd did not write its port file")
            pause(0.05)
        with open(port_file) as f:
            self.port = f.read().strip()

    def kill_simd(self):
        self.server.kill()
        self.server.wait()

    def chat(self, user, *args):
        """`sim [OPTIONS] chat USER [PEER]` in a terminal: `args` is the peer, or OPTIONS, "chat" and the peer."""
        options, rest = [], list(args)
        if "chat" in rest:
            i = rest.index("chat")
            options, rest = rest[:i], rest[i + 1:]
        c = Chat(user, [self.sim, "--server", "127.0.0.1:" + self.port, "--trust", "tofu", *options, "chat", user,
                        *rest],
                 dict(self.env, SIM_PASSWORD=user + " password"))
        self.procs.append(c.proc)
        current["chats"].append(c)
        return c

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for c in current["chats"]:
            os.close(c.master)
        current["chats"] = []
        shutil.rmtree(self.tmp, ignore_errors=True)


def e2e_basics(s):
    s.start_simd()
    alice = s.chat("alice", "bob")
    alice.wait_for(r"connected")
    bob = s.chat("bob", "alice")
    for c in (alice, bob):
        c.wait_for(r"end-to-end")

    # Presence: each named the other at login, so each is the other's contact; an online one has '*' in the
    # conversation list (read after a full repaint, Ctrl-L, so that the line is drawn whole).
    pause(0.5)
    alice.repaint(r"> bob \*")

    # A typed line is one message on the other screen.
    alice.type(b"ping-from-alice-7\r")
    bob.wait_for(r"ping-from-alice-7")

    # A paste: one message, its leading '/' is text, its newline stays a line break.
    mark = bob.mark()
    alice.type(b"\x1b[200~/quit\rsecond-line-of-paste\x1b[201~")
    bob.wait_for(r"second-line-of-paste", since=mark)
    if alice.proc.poll() is not None:
        fail("a pasted /quit ran as a command")
    # Repaint bob's whole screen (Ctrl-L): the paste is one '[alice]' entry over two lines.
    bob.repaint(r"\[alice\] /quit[^\n]*\n[^\n\[]*second-line-of-paste")

    # A resize redraws the screen and the chat goes on.
    mark = alice.mark()
    set_size(alice.master, 30, 100)
    os.kill(alice.proc.pid, signal.SIGWINCH)
    alice.wait_for(r"connected", since=mark)
    alice.type(b"after-resize-9\r")
    bob.wait_for(r"after-resize-9")

    # A lone Esc is the Esc key: a key typed after it is itself, not Alt-key (which would eat the 'e').
    alice.type(b"\x1b")
    pause(0.3)
    alice.type(b"esc-then-text-3\r")
    bob.wait_for(r"\[alice\] esc-then-text-3")

    # Tab completes a name at the start of a message...
    bob.type(b"ali\tsaw-it\r")
    alice.wait_for(r"\[bob\] alice: saw-it")
    # ... and a command; /history shows the inbox's last messages in the message pane.
    mark = bob.mark()
    bob.type(b"/hist\t1\r")
    pause(0.5)
    bob.type(CTRL_L)
    bob.wait_for(r"the last 1 message\(s\) from alice in the inbox:[\s\S]{0,300}?\[alice\] esc-then-text-3",
                 since=mark)

    for c in (alice, bob):
        c.quit()


def server_assigned_conversations(s):
    s.start_simd("--conversation-mode", "server-assigned")
    alice = s.chat("alice", "bob")
    bob = s.chat("bob", "alice")
    carol = s.chat("carol")
    dave = s.chat("dave")
    for c in (carol, dave):
        c.wait_for(r"connected")
    # The conversation is keyed by the server, and the status line says who can read it.
    alice.wait_for(r"server-assigned key: the server can read this conversation")
    alice.repaint(r"> bob[\s\S]*alice \| connected \| bob: server-assigned: readable by the server")
    bob.repaint(r"> alice[\s\S]*bob \| connected \| alice: server-assigned: readable by the server")

    # /open makes a new conversation current (listed after bob), and what is typed goes there.
    # carol and dave talk to nobody: the message is an unread count in their lists until they switch to it (carol
    # with Ctrl-N, dave with Ctrl-P, from no conversation to the only one).
    for peer, line, key in ((carol, b"hi-carol-1", CTRL_N), (dave, b"hi-dave-2", CTRL_P)):
        alice.type(b"/open " + peer.name.encode() + b"\r")
        alice.repaint(r"> " + peer.name + r"[\s\S]*connected \| " + peer.name +
                      r": server-assigned: readable by the server")
        alice.type(line + b"\r")
        peer.repaint(r"alice \*? ?\(1\)")
        peer.type(key)
        screen = peer.repaint(r"> alice[\s\S]*\[alice\] " + line.decode() +
                              r"[\s\S]*connected \| alice: server-assigned")
        absent(screen, r"alice \*? ?\(\d+\)", f"{peer.name}'s unread count stays after switching to alice")
    screen = alice.repaint(r"> dave")
    if not re.search(r"bob[^\n]*\n[^a-z>]*carol[^\n]*\n[^a-z>]*> dave", screen):
        fail("alice's list is not bob, carol, > dave")

    # Messages to alice in the background conversations: unread counts in her list, nothing in dave's pane.
    bob.type(b"from-bob-3\r")
    alice.repaint(r"bob \*? ?\(1\)")
    carol.type(b"from-carol-4\r")
    # Having written, carol has named alice too: they are contacts now, and alice's list shows her online.
    alice.repaint(r"carol \* \(1\)")
    bob.type(b"from-bob-5\r")
    alice.repaint(r"bob \*? ?\(2\)")
    screen = alice.repaint(r"> dave[\s\S]*dave: server-assigned")
    absent(screen, r"from-bob|from-carol", "a message of a background conversation shown in dave's")
    if not (re.search(r"bob \*? ?\(2\)", screen) and re.search(r"carol \*? ?\(1\)", screen)):
        fail("the repainted list lacks the unread counts bob (2), carol (1)")

    # Ctrl-N after the last conversation wraps round to the first: bob, whose messages show and count goes.
    alice.type(CTRL_N)
    screen = alice.repaint(r"> bob[\s\S]*connected \| bob: server-assigned")
    if not (re.search(r"\[bob\] from-bob-3", screen) and re.search(r"\[bob\] from-bob-5", screen)):
        fail("Ctrl-N to bob does not show his messages")
    absent(screen, r"bob \*? ?\(\d+\)", "bob's unread count stays after switching to him")
    absent(screen, r"hi-dave-2", "dave's conversation shown in bob's")
    if not re.search(r"carol \*? ?\(1\)", screen):
        fail("carol's unread count went while another conversation was shown")

    # Ctrl-P before the first wraps round to the last (dave), once more goes back to carol.
    alice.type(CTRL_P)
    alice.repaint(r"> dave[\s\S]*connected \| dave: server-assigned")
    alice.type(CTRL_P)
    screen = alice.repaint(r"> carol[\s\S]*connected \| carol: server-assigned")
    if not re.search(r"\[carol\] from-carol-4", screen):
        fail("Ctrl-P to carol does not show her message")
    absent(screen, r"carol \*? ?\(\d+\)", "carol's unread count stays after switching to her")
    absent(screen, r"from-bob", "bob's conversation shown in carol's")

    # A line goes to the conversation switched to, and only there.
    alice.type(b"reply-carol-6\r")
    carol.wait_for(r"\[alice\] reply-carol-6")
    # Alt-1: the first conversation.
    alice.type(b"\x1b1")
    alice.repaint(r"> bob[\s\S]*connected \| bob: server-assigned")
    alice.type(b"reply-bob-7\r")
    bob.wait_for(r"\[alice\] reply-bob-7")
    pause(0.3)
    absent(dave.text(), r"reply-carol-6|reply-bob-7", "a line reached dave, who was not current")
    absent(bob.text(), r"reply-carol-6", "a line for carol reached bob")

    for c in (alice, bob, carol, dave):
        c.quit()


def reconnect(s, mode="e2e"):
    keyed, protection = {"e2e": (r"end-to-end conversation with", "end-to-end"),
                         "server-assigned": (r"server-assigned key", "server-assigned: readable")}[mode]
    s.start_simd("--conversation-mode", mode)
    fast = ["--reconnect-delay", "0.2", "--reconnect-max", "1", "--timeout", "10", "chat"]
    alice = s.chat("alice", *fast, "bob")
    bob = s.chat("bob", *fast, "alice")
    for c in (alice, bob):
        c.wait_for(keyed)
    alice.type(b"before-restart-1\r")
    bob.wait_for(r"\[alice\] before-restart-1")

    # The server dies: both chats go on, say so, and count down to the next attempt in the status line.
    marks = {c: c.mark() for c in (alice, bob)}
    s.kill_simd()
    for c in (alice, bob):
        c.wait_for(r"connection lost: ", since=marks[c])
        c.repaint(r"\| reconnecting in \d+ s")
        if c.proc.poll() is not None:
            fail(f"{c.name}'s chat ended when the server went away")
    # A line typed while it is down is queued.
    alice.type(b"while-down-2\r")
    alice.wait_for(r"not connected: queued in the outbox", since=marks[alice])
    alice.wait_for(r"reconnecting failed: ", since=marks[alice])

    # The server comes back on the same port with the same data: the chats are back and the queued line arrives.
    s.start_simd("--conversation-mode", mode, port=s.port)
    for c in (alice, bob):
        c.wait_for(r"\* reconnected", since=marks[c])
        c.repaint(r"\| connected \| ")
    bob.wait_for(r"\[alice\] while-down-2", since=marks[bob])
    # The conversations are opened again without /open: it goes on both ways.
    alice.type(b"after-restart-3\r")
    bob.wait_for(r"\[alice\] after-restart-3", since=marks[bob])
    bob.type(b"back-too-4\r")
    alice.wait_for(r"\[bob\] back-too-4", since=marks[alice])
    screen = bob.repaint(r"\[alice\] after-restart-3[\s\S]*connected \| alice: " + protection)
    for line in ("before-restart-1", "while-down-2", "after-restart-3"):
        n = len(re.findall(r"\[alice\] " + line, screen))
        if n != 1:
            fail(f"'[alice] {line}' is on bob's repainted screen {n} times")

    for c in (alice, bob):
        c.quit()


SCENARIOS = {
    "e2e-basics": e2e_basics,
    "server-assigned-conversations": server_assigned_conversations,
    "reconnect": reconnect,
    "reconnect-server-assigned": lambda s: reconnect(s, "server-assigned"),
}


def main():
    simd, sim = sys.argv[1], sys.argv[2]
    names = sys.argv[3:] or list(SCENARIOS)
    for name in names:
        if name not in SCENARIOS:
            print(f"unknown scenario {name}; known: {' '.join(SCENARIOS)}", file=sys.stderr)
            sys.exit(2)
    for name in names:
        current["scenario"] = name
        started = time.monotonic()
        s = Scenario(simd, sim)
        try:
            SCENARIOS[name](s)
        finally:
            s.close()
        print(f"ok {name} ({time.monotonic() - started:.1f} s)")


if __name__ == "__main__":
    main()
