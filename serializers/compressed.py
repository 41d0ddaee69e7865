"""`CompressedSerializer`: another serializer's bytes through zlib, lzma or bz2, streamed."""

from __future__ import annotations

import io
import zlib
from typing import Any, BinaryIO, Self, cast

from . import context
from .base import Serializer, check_spec_keys
from .errors import SerializationError

COMPRESSION_LIBS = ("zlib", "lzma", "bz2")
_LEVELS = {"zlib": range(-1, 10), "lzma": range(10), "bz2": range(1, 10)}
# Streaming works in chunks of this size, so a large payload is never held twice.
_CHUNK = 1 << 20


class CompressedSerializer(Serializer):
    """Compress what another serializer writes; type ``"compressed/<inner type>"``.

    `serializer` is a `Serializer`, a shorthand (``"pickle"``, ``"json"``) or a spec dict;
    `compressionlib` is ``"zlib"`` (default), ``"lzma"`` or ``"bz2"``; `level` is the library's
    level (zlib -1..9, lzma preset 0..9, bz2 1..9; None for its default). `dump` and `load`
    stream through the compressor chunk by chunk.

    Bounded: inside a `codec_context` with ``max_bytes``, `load` stops as soon as the
    decompressed stream passes that many bytes (`SerializationError`), so a decompression bomb
    costs at most the limit in memory; `dump` reports the uncompressed size in
    ``context.decoded_size`` (the result store records it in the header and uses it as the
    limit when reading).

    Example:
        >>> s = CompressedSerializer("json", compressionlib="lzma")
        >>> s.type
        'compressed/json'
        >>> s.loads(s.dumps({"rows": [0] * 1000}))["rows"][:3]
        [0, 0, 0]
    """

    def __init__(
        self,
        serializer: str | Serializer | dict[str, Any] = "pickle",
        compressionlib: str = "zlib",
        level: int | None = None,
    ) -> None:
        from .registry import resolve_serializer  # registry imports this module

        inner = resolve_serializer(serializer)
        if isinstance(inner, CompressedSerializer):
            raise SerializationError("compressing twice gains nothing: wrap a plain serializer")
        if compressionlib not in COMPRESSION_LIBS:
            raise SerializationError(
                f"unknown compressionlib {compressionlib!r}: "
                f"choose one of {', '.join(COMPRESSION_LIBS)}"
            )
        levels = _LEVELS[compressionlib]
        if level is not None and (type(level) is not int or level not in levels):
            raise SerializationError(
                f"{compressionlib} level must be None or an integer from "
                f"{levels.start} to {levels.stop - 1}, not {level!r}"
            )
        self.serializer = inner
        self.compressionlib = compressionlib
        self.level = level
        self.type = f"compressed/{inner.type}"

    def _compressor(self) -> Any:
        if self.compressionlib == "zlib":
            return zlib.compressobj(-1 if self.level is None else self.level)
        if self.compressionlib == "lzma":
            import lzma

            return lzma.LZMACompressor(preset=self.level)
        import bz2

        return bz2.BZ2Compressor(9 if self.level is None else self.level)

    def _decompressor(self) -> Any:
        if self.compressionlib == "zlib":
            return zlib.decompressobj()
        if self.compressionlib == "lzma":
            import lzma

            return lzma.LZMADecompressor()
        import bz2

        return bz2.BZ2Decompressor()

    def dumps(self, obj: Any) -> bytes:
        compressor = self._compressor()
        data: bytes = compressor.compress(self.serializer.dumps(obj)) + compressor.flush()
        return data

    def loads(self, data: bytes) -> Any:
        return self.load(io.BytesIO(data))

    def dump(self, obj: Any, file: BinaryIO) -> None:
        writer = _CompressingWriter(file, self._compressor())
        self.serializer.dump(obj, cast(BinaryIO, writer))
        writer.finish()
        active = context.current()
        if active is not None:
            active.decoded_size = writer.size

    def load(self, file: BinaryIO) -> Any:
        active = context.current()
        limit = active.max_bytes if active is not None else None
        raw = _DecompressingReader(file, self._decompressor(), self.compressionlib, limit)
        return self.serializer.load(cast(BinaryIO, io.BufferedReader(raw, _CHUNK)))

    def versions(self) -> dict[str, str]:
        return self.serializer.versions()

    def incompatible(self, recorded: dict[str, str]) -> str | None:
        return self.serializer.incompatible(recorded)

    def to_spec(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "serializer": self.serializer.to_spec(),
            "compressionlib": self.compressionlib,
            "level": self.level,
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Self:
        """Rebuild from `to_spec()` output or a bare ``{"type": "compressed/json"}``."""
        check_spec_keys(spec, {"type", "serializer", "compressionlib", "level"})
        inner_type = str(spec["type"]).partition("/")[2]
        inner = spec.get("serializer", inner_type)
        made = cls(inner, spec.get("compressionlib", "zlib"), spec.get("level"))
        if made.type != spec["type"]:
            raise SerializationError(
                f"serializer spec says {spec['type']!r} but wraps {made.serializer.type!r}"
            )
        return made

    def _identity(self) -> Any:
        return (self.serializer._identity(), self.compressionlib, self.level)

    def __repr__(self) -> str:
        return (
            f"CompressedSerializer({self.serializer!r}, "
            f"compressionlib={self.compressionlib!r}, level={self.level!r})"
        )


class _CompressingWriter:
    """A write-only file object that compresses into `file` in bounded chunks."""

    def __init__(self, file: BinaryIO, compressor: Any) -> None:
        self._file = file
        self._compressor = compressor
        self.size = 0

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.size += len(view)
        for start in range(0, len(view), _CHUNK):
            out = self._compressor.compress(view[start : start + _CHUNK])
            if out:
                self._file.write(out)
        return len(view)

    def flush(self) -> None:
        """Does nothing: compressed output is complete only after `finish`."""

    def finish(self) -> None:
        self._file.write(self._compressor.flush())


class _DecompressingReader(io.RawIOBase):
    """A raw reader that decompresses `file`, never producing more than asked for at once."""

    def __init__(self, file: BinaryIO, decompressor: Any, lib: str, limit: int | None) -> None:
        self._file = file
        self._decompressor = decompressor
        self._zlib = lib == "zlib"
        self._lib = lib
        self._limit = limit
        self._produced = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        out = memoryview(buffer).cast("B")
        if not len(out):
            return 0
        want = min(len(out), _CHUNK)
        if self._limit is not None:
            # Ask for one byte past the limit at most: enough to notice a bomb, never more.
            want = max(1, min(want, self._limit + 1 - self._produced))
        data = self._next(want)
        self._produced += len(data)
        if self._limit is not None and self._produced > self._limit:
            raise SerializationError(
                f"decompressed payload exceeds its limit of {self._limit} bytes (the size its "
                "record declares, or BLOCKS_RESULTS_MAX_BYTES): a decompression bomb or a "
                "damaged record; decoding stopped"
            )
        out[: len(data)] = data
        return len(data)

    def _next(self, size: int) -> bytes:
        d = self._decompressor
        while not d.eof:
            if self._zlib:
                # zlib keeps input it could not use yet (output was capped) in unconsumed_tail.
                data = d.unconsumed_tail or self._file.read(_CHUNK)
                at_end = not data
            else:
                data = self._file.read(_CHUNK) if d.needs_input else b""
                at_end = not data and d.needs_input
            try:
                out: bytes = d.decompress(data, size)
            except Exception as exc:  # zlib.error, lzma.LZMAError, OSError from bz2, ...
                raise SerializationError(f"{self._lib} payload is corrupt: {exc}") from exc
            if out:
                return out
            if at_end or (not data and not d.needs_input and not d.eof):
                raise SerializationError(
                    f"{self._lib} payload is truncated: the stream ends before its end marker"
                )
        return b""
