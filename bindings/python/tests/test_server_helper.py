"""libsim.Server: finding simd, starting it on a free port, clean stops, and clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import libsim
from libsim.server import find_simd


def test_start_and_stop(tmp_path: Path) -> None:
    server = libsim.Server(data_dir=tmp_path / "data")
    assert not server.running
    with server:
        assert server.running
        assert 0 < server.port < 65536 and server.address == f"127.0.0.1:{server.port}"
        assert server.fingerprint is not None and len(server.fingerprint.split()) == 16
        with server.connect() as client:
            assert client.server_fingerprint == server.fingerprint
        assert "running" in repr(server)
    assert not server.running
    assert server.returncode == 0  # SIGTERM stops simd cleanly
    assert server.stop() == 0  # idempotent
    assert (tmp_path / "data").is_dir()  # a given data directory is kept


def test_two_servers_get_different_ports_and_keys(sim_server_factory) -> None:  # type: ignore[no-untyped-def]
    a = sim_server_factory()
    b = sim_server_factory()
    assert a.port != b.port
    assert a.fingerprint != b.fingerprint


def test_missing_simd_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SIM_SIMD", str(tmp_path / "no-such-simd"))
    with pytest.raises(libsim.SimdNotFound, match="SIM_SIMD"):
        libsim.Server()
    with pytest.raises(FileNotFoundError):
        find_simd()
    monkeypatch.delenv("SIM_SIMD")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(libsim.SimdNotFound, match="SIM_SIMD"):
        find_simd()


def test_simd_comes_from_the_environment() -> None:
    assert os.environ.get("SIM_SIMD"), "meson's test setup sets SIM_SIMD"
    assert find_simd() == Path(os.environ["SIM_SIMD"])


def test_a_server_that_cannot_start_reports_its_output() -> None:
    server = libsim.Server(extra_args=["--no-such-option"])
    with pytest.raises(libsim.ServerError) as info:
        server.start()
    message = str(info.value)
    assert "exited with code" in message and "simd output" in message
    assert not server.running


def test_connecting_to_a_stopped_server(sim_server_factory) -> None:  # type: ignore[no-untyped-def]
    server = sim_server_factory()
    port = server.port
    assert server.stop() == 0
    with pytest.raises(libsim.ServerError):
        server.connect()
    with pytest.raises(libsim.NetworkError):
        libsim.Client("127.0.0.1", port, connect_timeout=5, in_memory_state=True)


def test_conversation_mode_reaches_simd(sim_server_factory) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="conversation_mode"):
        libsim.Server(conversation_mode="plaintext")
    for mode, expected in (("e2e", libsim.ConversationMode.END_TO_END),
                           ("server-assigned", libsim.ConversationMode.SERVER_ASSIGNED)):
        server = sim_server_factory(**({} if mode == "e2e" else {"conversation_mode": mode}))
        assert server.conversation_mode == mode and mode in repr(server)
        assert server.command[server.command.index("--conversation-mode") + 1] == mode
        with server.connect() as bob, server.connect() as alice:
            bob.login("bob", "bob's password")
            bob.probe("nobody")  # answered after the prekey status: bob's prekeys are on their way
            bob.wait_for(libsim.EventKind.WAITING, "nobody", timeout=15)
            alice.login("alice", "alice's password", "bob")
            assert alice.wait_for(libsim.EventKind.KEY_ASSIGNED, "bob", timeout=15).mode == expected
