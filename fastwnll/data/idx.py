"""Reader for the IDX file format of MNIST (http://yann.lecun.com/exdb/mnist/), gzip-compressed or plain.

An IDX file is a 4-byte magic number ``0x00 0x00 <type code> <ndim>``, then ``ndim`` big-endian
uint32 dimension sizes, then the values in C order, big-endian. MNIST's images are
``[N, 28, 28]`` uint8 (type code 0x08) and its labels ``[N]`` uint8.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

# IDX type code -> big-endian numpy dtype.
IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"


def read_idx_bytes(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse the (uncompressed) content of an IDX file.

    Args:
        data: the file's bytes.
        name: what to call the data in error messages (a file name).
    Returns:
        A numpy array of the file's shape, in the file's value type with native byte order
        (``uint8`` for MNIST); it may be read-only (a view of ``data``).
    Raises:
        ValueError: bad magic number, unknown type code, or a size that does not match the header.
    """
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{name} is not an IDX file (its first two bytes must be zero)")
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        raise ValueError(
            f"{name} has unknown IDX type code 0x{code:02x} (known: {', '.join(f'0x{c:02x}' for c in IDX_DTYPES)})"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{name} is truncated: its IDX header announces {ndim} dimensions")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(
            f"{name} holds {len(data) - header} bytes of values but its IDX header "
            f"(shape {shape}, {dtype.name}) needs {expected}"
        )
    values = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return values.astype(dtype.newbyteorder("="), copy=False)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file, gzip-compressed (detected from its content, whatever its name) or plain.

    Args:
        path: the file.
    Returns:
        A numpy array (see :func:`read_idx_bytes`), e.g. ``[10000, 28, 28]`` uint8 for
        ``t10k-images-idx3-ubyte.gz``.
    Raises:
        FileNotFoundError: no such file. ValueError: not a valid IDX file.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as error:
            raise ValueError(f"{path} is a corrupt gzip file: {error}") from None
    return read_idx_bytes(raw, str(path))
