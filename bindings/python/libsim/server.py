"""Run a real ``simd`` for tests and scripts: a free loopback port, a temporary database, a clean stop.

::

    with Server() as server:                      # or the `sim_server` pytest fixture
        with server.connect() as alice:
            alice.login("alice", "password")

The ``simd`` binary is taken from the ``simd`` argument, else the ``SIM_SIMD`` environment variable (meson sets it
for the test suite), else ``simd`` on ``PATH``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from .client import Client

__all__ = ["CONVERSATION_MODES", "Server", "ServerError", "SimdNotFound", "find_simd"]

#: Values of simd's ``--conversation-mode``: end to end (the default) or the seed's server-assigned keys.
CONVERSATION_MODES = ("e2e", "server-assigned")

_LISTENING = re.compile(r"listening on (?P<address>\S+) fingerprint (?P<fingerprint>.+?)\s*$")


class SimdNotFound(FileNotFoundError):
    """No simd binary could be found."""


class ServerError(RuntimeError):
    """simd did not start, or did not stop cleanly. The message ends with simd's output."""


def find_simd(simd: str | os.PathLike[str] | None = None) -> Path:
    """The simd binary: `simd`, else $SIM_SIMD, else `simd` on PATH. Raises SimdNotFound with what was tried."""
    tried = []
    candidates: list[tuple[str, str | os.PathLike[str] | None]] = [
        ("the simd argument", simd),
        ("$SIM_SIMD", os.environ.get("SIM_SIMD") or None),
    ]
    for origin, candidate in candidates:
        if candidate is None:
            continue
        path = Path(candidate)
        if path.is_file() and os.access(path, os.X_OK):
            return path
        tried.append(f"{origin} = {str(path)!r} is not an executable file")
        # An explicit choice that does not work is an error, not a reason to pick another binary.
        raise SimdNotFound("simd not found: " + "; ".join(tried))
    on_path = shutil.which("simd")
    if on_path:
        return Path(on_path)
    raise SimdNotFound(
        "simd not found: pass simd=..., set SIM_SIMD to the built tools/simd (meson test does this), "
        "or put simd on PATH"
    )


class Server:
    """A ``simd`` process on 127.0.0.1 with a port chosen by the kernel and a data directory of its own.

    ``conversation_mode`` is passed as ``--conversation-mode``: ``"e2e"`` (the default: X3DH and the Double
    Ratchet, the server only relays) or ``"server-assigned"`` (the seed's mode, where the server generates the
    conversation keys). ``conversation_suite`` is passed as ``--conversation-suite`` (e.g. ``"tdes"`` for the seed's
    Triple-DES); ``extra_args`` are appended to the command line. The data directory is deleted on stop unless
    ``data_dir`` was given. ``bcrypt_cost`` 4 keeps logins fast in tests.
    """

    def __init__(
        self,
        *,
        simd: str | os.PathLike[str] | None = None,
        conversation_mode: str = "e2e",
        conversation_suite: str | None = None,
        extra_args: Sequence[str] = (),
        data_dir: str | os.PathLike[str] | None = None,
        bcrypt_cost: int = 4,
        log_level: str = "warning",
        start_timeout: float = 15.0,
    ) -> None:
        if conversation_mode not in CONVERSATION_MODES:
            raise ValueError(f"conversation_mode must be one of {CONVERSATION_MODES}, not {conversation_mode!r}")
        self.simd = find_simd(simd)
        self.conversation_mode = conversation_mode
        self.conversation_suite = conversation_suite
        self.extra_args = list(extra_args)
        self.bcrypt_cost = bcrypt_cost
        self.log_level = log_level
        self.start_timeout = start_timeout
        self._own_dir: str | None = None
        self._data_dir = Path(data_dir) if data_dir is not None else None
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._lines: list[str] = []
        self._lines_lock = threading.Lock()
        self._listening = threading.Event()
        self.host = "127.0.0.1"
        self.port = 0
        self.fingerprint: str | None = None
        self.returncode: int | None = None
        self.data_dir: Path | None = None
        self.command: list[str] = []

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Server:
        """Start simd and wait until it listens. Raises ServerError (with simd's output) when it does not."""
        if self._process is not None:
            raise ServerError("the server is already started")
        self._own_dir = tempfile.mkdtemp(prefix="libsim-simd-")
        work = Path(self._own_dir)
        data_dir = self._data_dir if self._data_dir is not None else work / "data"
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.data_dir = data_dir
        port_file = work / "port"
        command = [
            str(self.simd),
            "--listen", f"{self.host}:0",
            "--port-file", str(port_file),
            "--data-dir", str(data_dir),
            "--bcrypt-cost", str(self.bcrypt_cost),
            "--log-level", self.log_level,
            "--conversation-mode", self.conversation_mode,
        ]
        if self.conversation_suite:
            command += ["--conversation-suite", self.conversation_suite]
        command += self.extra_args
        self.command = command
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        self._reader = threading.Thread(target=self._read_output, name="simd-output", daemon=True)
        self._reader.start()
        try:
            self.port = self._wait_for_port(port_file)
            # The banner with the fingerprint may come just after the port file; it is optional for callers.
            self._listening.wait(timeout=2.0)
        except BaseException:
            self._kill()
            self._finish()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> int:
        """Send SIGTERM and wait for simd to exit; returns its exit code (SIGKILL after `timeout` seconds, and then
        ServerError). Idempotent."""
        process = self._process
        if process is None:
            return self.returncode if self.returncode is not None else 0
        try:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self._kill()
                    raise ServerError(f"simd did not stop within {timeout} s of SIGTERM" + self._output_tail())
            self.returncode = process.returncode
            return self.returncode
        finally:
            self._finish()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def address(self) -> str:
        """'127.0.0.1:PORT'"""
        return f"{self.host}:{self.port}"

    @property
    def output(self) -> str:
        """Everything simd printed so far (stdout and stderr)."""
        with self._lines_lock:
            return "".join(self._lines)

    def connect(self, **options: Any) -> Client:
        """A Client connected to this server (keyword options as for Client). Its end-to-end state is in memory
        unless a ``state_password`` is given: the server's database is temporary, so are its users' identities."""
        if not self.running:
            raise ServerError("the server is not running" + self._output_tail())
        options.setdefault("connect_timeout", 10.0)
        if "state_password" not in options:
            options.setdefault("in_memory_state", True)
        return Client(self.host, self.port, **options)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else f"stopped ({self.returncode})"
        return f"<libsim.Server {self.address} {self.conversation_mode} {state}>"

    # ------------------------------------------------------------------ internals

    def _read_output(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            with self._lines_lock:
                self._lines.append(line)
            match = _LISTENING.search(line)
            if match and not self._listening.is_set():
                self.fingerprint = match.group("fingerprint")
                self._listening.set()

    def _wait_for_port(self, port_file: Path) -> int:
        assert self._process is not None
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                text = port_file.read_text().strip()
                if text:
                    port = int(text)
                    if 0 < port < 65536:
                        return port
            except (FileNotFoundError, ValueError):
                pass  # not written yet, or caught mid-write
            if self._process.poll() is not None:
                self._join_reader()
                raise ServerError(f"simd exited with code {self._process.returncode} before listening"
                                  + self._output_tail())
            if time.monotonic() > deadline:
                raise ServerError(f"simd did not write its port file within {self.start_timeout} s"
                                  + self._output_tail())
            time.sleep(0.02)

    def _kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        if self._process is not None:
            self.returncode = self._process.returncode

    def _join_reader(self) -> None:
        if self._reader is not None:
            self._reader.join(timeout=5.0)

    def _finish(self) -> None:
        self._join_reader()
        if self._process is not None and self._process.stdout is not None:
            self._process.stdout.close()
        self._process = None
        if self._own_dir is not None:
            shutil.rmtree(self._own_dir, ignore_errors=True)
            self._own_dir = None

    def _output_tail(self, lines: int = 40) -> str:
        with self._lines_lock:
            tail = self._lines[-lines:]
        if not tail:
            return " (no output)"
        return "\n--- simd output ---\n" + "".join(tail)
