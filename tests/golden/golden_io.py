"""The named-tensor file of the golden data (tests/golden/tensor_file.h):
"FRGLGOLD" | uint32 count | count x (uint32 name length | name | uint32 ndim | int64 dims[ndim] | f64 data)."""
import struct

import numpy as np


def read(path):
    out = {}
    with open(path, "rb") as f:
        assert f.read(8) == b"FRGLGOLD", "bad magic"
        (count,) = struct.unpack("<I", f.read(4))
        for _ in range(count):
            (n,) = struct.unpack("<I", f.read(4))
            name = f.read(n).decode()
            (ndim,) = struct.unpack("<I", f.read(4))
            shape = struct.unpack("<" + "q" * ndim, f.read(8 * ndim))
            size = int(np.prod(shape)) if ndim else 1
            out[name] = np.frombuffer(f.read(8 * size), dtype="<f8").reshape(shape).copy()
    return out


def write(path, tensors):
    with open(path, "wb") as f:
        f.write(b"FRGLGOLD")
        f.write(struct.pack("<I", len(tensors)))
        for name in sorted(tensors):
            a = np.ascontiguousarray(tensors[name], dtype="<f8")
            f.write(struct.pack("<I", len(name)))
            f.write(name.encode())
            f.write(struct.pack("<I", a.ndim))
            f.write(struct.pack("<" + "q" * a.ndim, *a.shape))
            f.write(a.tobytes())
