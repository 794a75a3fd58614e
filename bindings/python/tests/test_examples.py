"""Smoke tests of examples/python/: the chat script talks to the echo bot (blocking, and on asyncio) through a real
simd."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from subprocess import Popen
from typing import Iterator

import pytest
from conftest import SOURCE_ROOT

import libsim

EXAMPLES = Path(os.environ.get("SIM_EXAMPLES_DIR") or SOURCE_ROOT / "examples" / "python")


def run_env(password: str, config_home: Path) -> dict[str, str]:
    """The environment of an example: its password, and its default state files under `config_home`."""
    env = dict(os.environ)
    env["SIM_PASSWORD"] = password
    env["XDG_CONFIG_HOME"] = str(config_home)
    return env


@pytest.mark.parametrize("script", ["chat.py", "echo_bot.py", "async_echo_bot.py"])
def test_help(script: str) -> None:
    result = subprocess.run([sys.executable, str(EXAMPLES / script), "--help"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


@contextmanager
def echo_bot(port: str, config_home: Path, *options: str, script: str = "echo_bot.py") -> Iterator[Popen[str]]:
    """The echo bot as user `echo`, online when this enters; killed if still running when it exits."""
    bot = subprocess.Popen(
        [sys.executable, str(EXAMPLES / script), "--port", port, "--user", "echo", *options],
        env=run_env("bot password", config_home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert bot.stdout is not None
        assert bot.stdout.readline().strip() == "echo is online"
        yield bot
    finally:
        if bot.poll() is None:
            bot.kill()
            bot.communicate()


def chat_with_echo(port: str, config_home: Path, lines: str) -> subprocess.CompletedProcess[str]:
    """chat.py as alice, talking to echo: sends `lines`, then waits 2 s for the answers."""
    return subprocess.run(
        [sys.executable, str(EXAMPLES / "chat.py"), "--port", port, "--user", "alice", "--peer", "echo",
         "--linger", "2"],
        input=lines, env=run_env("alice password", config_home), capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("bot_script", ["echo_bot.py", "async_echo_bot.py"])
def test_chat_with_the_echo_bot(sim_server: libsim.Server, tmp_path: Path, bot_script: str) -> None:
    port = str(sim_server.port)
    with echo_bot(port, tmp_path, "--max-messages", "2", "--state-file", str(tmp_path / "echo.db"),
                  script=bot_script) as bot:
        chat = chat_with_echo(port, tmp_path, "hello echo\nsecond line ✓\n")
        assert chat.returncode == 0, chat.stderr
        assert "talking to echo" in chat.stdout and "end-to-end" in chat.stdout
        assert re.search(r"^safety number \d{5}( \d{5}){11}$", chat.stdout, re.MULTILINE), chat.stdout
        assert "echo: hello echo" in chat.stdout
        assert "echo: second line ✓" in chat.stdout
        out, err = bot.communicate(timeout=60)
        assert bot.returncode == 0, err
        assert "talking to alice" in out and "echoed 2 messages" in out
        assert (tmp_path / "echo.db").is_file()  # the bot's encrypted end-to-end state


def test_the_echo_bot_keeps_its_identity_across_runs(sim_server: libsim.Server, tmp_path: Path) -> None:
    """Issue 14 finding 6: run the bot twice on its default state; alice (who keeps hers too) sees the same key, not
    a key change."""
    port = str(sim_server.port)
    safety_numbers = []
    for run in (1, 2):
        with echo_bot(port, tmp_path, "--max-messages", "1") as bot:
            chat = chat_with_echo(port, tmp_path, f"run {run}\n")
            assert chat.returncode == 0, f"run {run}: {chat.stderr}"
            assert "changed" not in chat.stdout + chat.stderr
            assert f"echo: run {run}" in chat.stdout
            safety_numbers += re.findall(r"^safety number ([\d ]+)$", chat.stdout, re.MULTILINE)
            out, err = bot.communicate(timeout=60)
            assert bot.returncode == 0, err
            assert "changed" not in out
    assert len(safety_numbers) == 2 and safety_numbers[0] == safety_numbers[1]
    assert (tmp_path / "libsim" / "keys" / f"127.0.0.1_{port}-echo.db").is_file()


def test_chat_reports_a_wrong_password(sim_server: libsim.Server, tmp_path: Path) -> None:
    port = str(sim_server.port)
    with sim_server.connect() as alice:
        alice.login("alice", "the real password")
    chat = subprocess.run(
        [sys.executable, str(EXAMPLES / "chat.py"), "--port", port, "--user", "alice", "--peer", "bob"],
        input="", env=run_env("a wrong password", tmp_path), capture_output=True, text=True, timeout=120)
    assert chat.returncode == 1
    assert "AUTH_REJECTED" in chat.stderr
