#!/usr/bin/env python3
"""Decode tables of the FP8 formats, computed independently of Frugal with ml_dtypes.

    pip install ml_dtypes numpy
    python3 tests/golden/make_fp8_tables.py > tests/golden/fp8_tables.txt

One line per code: "<format> <code> <value>", the value as a C99 hexadecimal float (float.hex()), or "nan",
"inf", "-inf". Formats: e4m3 (ml_dtypes.float8_e4m3fn) and e5m2 (ml_dtypes.float8_e5m2). tests/precision reads it.
"""
import math

import ml_dtypes
import numpy as np

for name, dtype in (("e4m3", ml_dtypes.float8_e4m3fn), ("e5m2", ml_dtypes.float8_e5m2)):
    values = np.arange(256, dtype=np.uint8).view(dtype).astype(np.float64)
    for code, v in enumerate(values):
        if math.isnan(v):
            text = "nan"
        elif math.isinf(v):
            text = "inf" if v > 0 else "-inf"
        else:
            text = float(v).hex()
            if v == 0 and math.copysign(1.0, v) < 0:
                text = "-0x0.0p+0"
        print(f"{name} {code} {text}")
