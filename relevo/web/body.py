"""Reading request bodies within limits: size caps, gzip (with a cap on what it inflates to)."""

from __future__ import annotations

import zlib

from starlette.requests import Request

from relevo.errors import PayloadTooLarge, ValidationError


async def read_body(request: Request, limit: int) -> bytes:
    """The body, decompressed if ``Content-Encoding: gzip``, at most ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the request body is {declared} bytes, over the limit of {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding != "gzip":
        raise ValidationError(f"Content-Encoding {encoding!r} is not supported (use gzip)")
    return _gunzip(body, limit)


def _gunzip(body: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise ValidationError(f"the body is not valid gzip: {exc}") from exc
    if len(out) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"the request body inflates to over the limit of {limit} bytes")
    if not inflater.eof:
        raise ValidationError("the gzip body is truncated")
    return out
