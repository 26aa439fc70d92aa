"""The only language spoken across the sandbox boundary: JSON plus raw array buffers.

A message is a 4-byte big-endian header length, a JSON header, then the raw bytes of the
arrays the header describes. Arrays appear in the JSON as ``{"__array__": i}`` and are listed
in ``header["arrays"]`` with their dtype and shape. The reader rebuilds each array with
:func:`numpy.frombuffer` after checking that its byte count is exactly ``prod(shape) *
itemsize`` and its dtype is one of :data:`DTYPES`: no pickle, no object arrays, no student
class ever reaches the grader. Sizes are bounded (:data:`MAX_HEADER`, ``max_bytes``), so a
flood or a malformed reply is a :class:`ProtocolError`, not a hang or a memory blow-up.

This module is bound into the sandbox too; it must import nothing but the standard library
and numpy.
"""

from __future__ import annotations

import json
import math
import os
import select
import struct
import time
from typing import Any

import numpy as np

#: dtypes that may cross the boundary (by numpy name).
DTYPES = frozenset({"float32", "float64", "int64", "int32", "uint8", "bool"})
#: Largest JSON header accepted, in bytes.
MAX_HEADER = 1 << 20
#: Default largest message (header + arrays), in bytes.
MAX_MESSAGE = 256 << 20
_LENGTH = struct.Struct(">I")


class ProtocolError(RuntimeError):
    """A message that breaks the protocol: too big, malformed, late, or a closed pipe."""


def _encode(value: Any, arrays: list[np.ndarray]) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return {"__float__": repr(value)}
        return value
    if isinstance(value, np.ndarray):
        if value.dtype.name not in DTYPES:
            raise ProtocolError(f"arrays of dtype {value.dtype} cannot cross the boundary")
        arrays.append(value if value.flags.c_contiguous else value.copy(order="C"))
        return {"__array__": len(arrays) - 1}
    if isinstance(value, (list, tuple)):
        return [_encode(v, arrays) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _encode(v, arrays) for k, v in value.items()}
    raise ProtocolError(f"a {type(value).__name__} cannot cross the boundary")


def encode(value: Any) -> bytes:
    """One message carrying ``value`` (JSON types, non-finite floats and numpy arrays)."""
    arrays: list[np.ndarray] = []
    body = _encode(value, arrays)
    header = {
        "body": body,
        "arrays": [{"dtype": a.dtype.name, "shape": list(a.shape)} for a in arrays],
    }
    text = json.dumps(header, allow_nan=False).encode("utf-8")
    return b"".join([_LENGTH.pack(len(text)), text, *(a.tobytes() for a in arrays)])


def _decode(value: Any, arrays: list[np.ndarray]) -> Any:
    if isinstance(value, list):
        return [_decode(v, arrays) for v in value]
    if isinstance(value, dict):
        if set(value) == {"__array__"}:
            index = value["__array__"]
            if type(index) is not int or not 0 <= index < len(arrays):
                raise ProtocolError(f"bad array reference {index!r}")
            return arrays[index]
        if set(value) == {"__float__"}:
            if value["__float__"] not in ("nan", "inf", "-inf"):
                raise ProtocolError(f"bad float {value['__float__']!r}")
            return float(value["__float__"])
        return {k: _decode(v, arrays) for k, v in value.items()}
    return value


def _reject_constant(name: str) -> Any:
    raise ProtocolError(f"non-standard JSON constant {name}")


class Channel:
    """Length-prefixed messages over a pair of file descriptors, with deadlines and limits."""

    def __init__(self, read_fd: int, write_fd: int, *, max_bytes: int = MAX_MESSAGE) -> None:
        """Use ``read_fd``/``write_fd``; refuse messages over ``max_bytes``."""
        self.read_fd, self.write_fd, self.max_bytes = read_fd, write_fd, max_bytes

    def send(self, value: Any, deadline: float | None = None) -> None:
        """Write one message.

        With a ``deadline``, a reader that stops reading cannot block the writer past it
        (:class:`TimeoutError`).
        """
        data = memoryview(encode(value))
        while data:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([], [self.write_fd], [], left)[1]:
                    raise TimeoutError("the other side stopped reading")
                written = os.write(self.write_fd, data[: select.PIPE_BUF])
            else:
                written = os.write(self.write_fd, data)
            data = data[written:]

    def _read_exact(self, size: int, deadline: float | None) -> bytes:
        chunks, remaining = [], size
        while remaining:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self.read_fd], [], [], left)[0]:
                    raise TimeoutError("no complete reply before the deadline")
            chunk = os.read(self.read_fd, min(remaining, 1 << 20))
            if not chunk:
                raise ProtocolError("the other side closed the channel")
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def receive(self, deadline: float | None = None) -> Any:
        """Read one message; ``deadline`` is a :func:`time.monotonic` time or ``None``.

        Raises:
            TimeoutError: nothing complete arrived before the deadline.
            ProtocolError: the message is malformed, too big or the pipe closed.
        """
        (length,) = _LENGTH.unpack(self._read_exact(_LENGTH.size, deadline))
        if length > MAX_HEADER:
            raise ProtocolError(f"header of {length} bytes exceeds {MAX_HEADER}")
        try:
            header = json.loads(self._read_exact(length, deadline), parse_constant=_reject_constant)
            specs = header["arrays"]
            body = header["body"]
            if not isinstance(specs, list) or len(header) != 2:
                raise ValueError("unexpected header fields")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise ProtocolError(f"malformed header: {exc}") from exc
        arrays, total = [], length
        for spec in specs:
            arrays.append(self._read_array(spec, deadline, total))
            total += arrays[-1].nbytes
        return _decode(body, arrays)

    def _read_array(self, spec: Any, deadline: float | None, total: int) -> np.ndarray:
        if not isinstance(spec, dict) or set(spec) != {"dtype", "shape"}:
            raise ProtocolError(f"malformed array description {str(spec)[:80]}")
        dtype, shape = spec["dtype"], spec["shape"]
        if dtype not in DTYPES:
            raise ProtocolError(f"dtype {str(dtype)[:20]!r} is not allowed")
        if not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape):
            raise ProtocolError(f"bad shape {str(shape)[:80]}")
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        if total + nbytes > self.max_bytes:
            raise ProtocolError(f"message larger than {self.max_bytes} bytes")
        data = self._read_exact(nbytes, deadline)
        return np.frombuffer(data, dtype=np.dtype(dtype)).reshape(shape).copy()
