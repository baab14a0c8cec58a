"""A trivial HTTP/1.1 server that answers every request ``200`` with a fixed collect report.

It measures the load generator's own ceiling: with this sink on the server's core, whatever
limits the request rate is the generator. Run as ``python -m bench._sink PORT``; it listens on
127.0.0.1 only and exits on SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import cast

REPLY_BODY = b'{"success":true,"accepted":100,"duplicates":0}'
REPLY = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
    + str(len(REPLY_BODY)).encode()
    + b"\r\n\r\n"
    + REPLY_BODY
)


class SinkProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            length = 0
            for line in bytes(self._buffer[:end]).split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            total = end + 4 + length
            if len(self._buffer) < total:
                return
            del self._buffer[:total]
            if self._transport is not None:
                self._transport.write(REPLY)


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()

    def finish() -> None:
        if not stop.done():
            stop.set_result(None)

    loop.add_signal_handler(signal.SIGTERM, finish)
    server = await loop.create_server(SinkProtocol, "127.0.0.1", port)
    async with server:
        await stop


def main() -> None:
    port = int(sys.argv[1])
    try:
        import uvloop
    except ImportError:  # the sink still works, a little slower
        asyncio.run(serve(port))
        return
    uvloop.run(serve(port))


if __name__ == "__main__":
    main()
