"""Byte encodings of model state: numpy arrays as ``.npy`` and the generator's exact state.

Models serialise to msgspec MessagePack structs; the pieces msgspec cannot encode itself are
converted here. Nothing is pickled: arrays are loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

import io
from typing import Any, TypeVar

import msgspec
import numpy as np
import numpy.typing as npt

T = TypeVar("T")


class StateError(ValueError):
    """Serialised model state that cannot be read (corrupt, or written by another model)."""


def array_to_bytes(array: npt.NDArray[Any]) -> bytes:
    """``array`` in the ``.npy`` format (dtype and shape included)."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def array_from_bytes(data: bytes) -> npt.NDArray[Any]:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)  # type: ignore[no-any-return]
    except (ValueError, OSError, EOFError) as exc:
        raise StateError(f"not a numpy array: {exc}") from exc


class GeneratorState(msgspec.Struct, frozen=True):
    """The state of a ``numpy.random.default_rng`` generator (PCG64).

    PCG64's state and increment are 128-bit integers, wider than MessagePack integers, so they
    travel as decimal strings.
    """

    state: str
    inc: str
    has_uint32: int
    uinteger: int


def generator_state(rng: np.random.Generator) -> GeneratorState:
    raw = rng.bit_generator.state
    if raw["bit_generator"] != "PCG64":
        raise StateError(f"unsupported bit generator {raw['bit_generator']!r}")
    return GeneratorState(
        state=str(raw["state"]["state"]),
        inc=str(raw["state"]["inc"]),
        has_uint32=int(raw["has_uint32"]),
        uinteger=int(raw["uinteger"]),
    )


def generator_from_state(saved: GeneratorState) -> np.random.Generator:
    bit_generator = np.random.PCG64()
    try:
        bit_generator.state = {
            "bit_generator": "PCG64",
            "state": {"state": int(saved.state), "inc": int(saved.inc)},
            "has_uint32": saved.has_uint32,
            "uinteger": saved.uinteger,
        }
    except (ValueError, TypeError) as exc:
        raise StateError(f"bad generator state: {exc}") from exc
    return np.random.Generator(bit_generator)


def encode(state: msgspec.Struct) -> bytes:
    return msgspec.msgpack.encode(state)


def decode(data: bytes, kind: type[T]) -> T:
    """Decode ``data`` as a ``kind`` struct; anything else raises :class:`StateError`."""
    try:
        return msgspec.msgpack.decode(data, type=kind)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        raise StateError(f"not a {kind.__name__}: {exc}") from exc
