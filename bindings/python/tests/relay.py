"""A TCP relay between a client and simd for the attack tests: it forwards frames both ways, keeps the ones the
client sent, and can inject bytes (a replayed record) towards the server. Its connection to simd comes from
`source` (any 127.x.y.z address works on Linux), so a test can show simd several client addresses."""

from __future__ import annotations

import socket
import threading

import libsim


class Relay:
    def __init__(self, server_port: int, source: str = "127.0.0.1") -> None:
        self._server_port = server_port
        self._source = source
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.client_frames: list[bytes] = []  # encoded frames the client sent, in order
        self._upstream: socket.socket | None = None
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._run, daemon=True)
        self._accept.start()

    def _run(self) -> None:
        self._listener.settimeout(20.0)
        try:
            downstream, _ = self._listener.accept()
        except OSError:
            return
        upstream = socket.create_connection(("127.0.0.1", self._server_port), source_address=(self._source, 0))
        self._upstream = upstream
        self._downstream = downstream
        self._connected.set()
        for src, dst, record in ((downstream, upstream, True), (upstream, downstream, False)):
            t = threading.Thread(target=self._pump, args=(src, dst, record), daemon=True)
            t.start()
            self._threads.append(t)

    def _pump(self, src: socket.socket, dst: socket.socket, record: bool) -> None:
        decoder = libsim.FrameDecoder(max_frame_size=1 << 24)
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if record:
                    decoder.feed(data)
                    with self._lock:
                        self.client_frames.extend(f.encode(max_frame_size=1 << 24) for f in decoder)
                with self._lock:
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def inject_to_server(self, data: bytes) -> None:
        assert self._connected.wait(10.0), "nobody connected to the relay"
        assert self._upstream is not None
        with self._lock:
            self._upstream.sendall(data)

    def close(self) -> None:
        self._listener.close()
        for name in ("_upstream", "_downstream"):
            s = getattr(self, name, None)
            if s is not None:
                s.close()
        for t in self._threads:
            t.join(timeout=5.0)
