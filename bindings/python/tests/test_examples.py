"""Smoke tests of examples/python/: the chat script talks to the echo bot (blocking, and on asyncio) through a real
simd."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SOURCE_ROOT

import libsim

EXAMPLES = Path(os.environ.get("SIM_EXAMPLES_DIR") or SOURCE_ROOT / "examples" / "python")


def run_env(password: str) -> dict[str, str]:
    env = dict(os.environ)
    env["SIM_PASSWORD"] = password
    return env


@pytest.mark.parametrize("script", ["chat.py", "echo_bot.py", "async_echo_bot.py"])
def test_help(script: str) -> None:
    result = subprocess.run([sys.executable, str(EXAMPLES / script), "--help"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


@pytest.mark.parametrize("bot_script", ["echo_bot.py", "async_echo_bot.py"])
def test_chat_with_the_echo_bot(sim_server: libsim.Server, tmp_path: Path, bot_script: str) -> None:
    port = str(sim_server.port)
    bot = subprocess.Popen(
        [sys.executable, str(EXAMPLES / bot_script), "--port", port, "--user", "echo", "--max-messages", "2",
         "--state-file", str(tmp_path / "echo.db")],
        env=run_env("bot password"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert bot.stdout is not None
        assert bot.stdout.readline().strip() == "echo is online"
        chat = subprocess.run(
            [sys.executable, str(EXAMPLES / "chat.py"), "--port", port, "--user", "alice", "--peer", "echo",
             "--linger", "2"],
            input="hello echo\nsecond line ✓\n", env=run_env("alice password"), capture_output=True, text=True,
            timeout=120)
        assert chat.returncode == 0, chat.stderr
        assert "talking to echo" in chat.stdout and "end-to-end" in chat.stdout
        assert re.search(r"^safety number \d{5}( \d{5}){11}$", chat.stdout, re.MULTILINE), chat.stdout
        assert "echo: hello echo" in chat.stdout
        assert "echo: second line ✓" in chat.stdout
        out, err = bot.communicate(timeout=60)
        assert bot.returncode == 0, err
        assert "talking to alice" in out and "echoed 2 messages" in out
        assert (tmp_path / "echo.db").is_file()  # the bot's encrypted end-to-end state
    finally:
        if bot.poll() is None:
            bot.kill()
            bot.communicate()


def test_chat_reports_a_wrong_password(sim_server: libsim.Server) -> None:
    port = str(sim_server.port)
    with sim_server.connect() as alice:
        alice.login("alice", "the real password")
    chat = subprocess.run(
        [sys.executable, str(EXAMPLES / "chat.py"), "--port", port, "--user", "alice", "--peer", "bob"],
        input="", env=run_env("a wrong password"), capture_output=True, text=True, timeout=120)
    assert chat.returncode == 1
    assert "AUTH_REJECTED" in chat.stderr
