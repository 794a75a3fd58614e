"""pytest fixtures that start a real simd: load with ``pytest_plugins = ["libsim.pytest_plugin"]`` (or
``-p libsim.pytest_plugin``).

``sim_server``          a running :class:`libsim.Server` for one test; the test fails if simd does not stop cleanly
``sim_server_factory``  call it with Server keyword arguments to start more servers (all stopped at teardown),
                        e.g. ``sim_server_factory(conversation_mode="server-assigned")`` for the seed's mode

Servers run in end-to-end mode (``conversation_mode="e2e"``) unless told otherwise.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest

from .server import Server

__all__ = ["sim_server", "sim_server_factory"]


@pytest.fixture
def sim_server_factory() -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(**options: Any) -> Server:
        server = Server(**options)
        servers.append(server)
        return server.start()

    yield start
    failures = []
    for server in servers:
        code = server.stop()
        if code != 0:
            failures.append(f"simd {server.address} exited with code {code}\n{server.output}")
    if failures:
        pytest.fail("\n".join(failures), pytrace=False)


@pytest.fixture
def sim_server(sim_server_factory: Callable[..., Server]) -> Server:
    return sim_server_factory()
