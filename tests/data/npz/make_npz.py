#!/usr/bin/env python3
"""Makes the NumPy-written files of tests/io/npz.test.cpp: what numpy.savez produces, read by our
reader, whose values the test checks against the formulas below (not against our writer).

  types.npz       numpy.savez of every dtype we read, C and Fortran order, 0-D, empty and 3-D
  versions.npz    a zip of .npy arrays in format versions 1.0, 2.0 and 3.0 (numpy.lib.format)
  compressed.npz  numpy.savez_compressed (refused: only stored entries are read)
  bigendian.npz   a '>f4' array (refused)
  structured.npz  a structured dtype (refused)
  object.npz      an object array, i.e. a pickle (refused, never unpickled)

Run with Debian's python3-numpy: /usr/bin/python3 make_npz.py (in this folder); made with
numpy 1.24.2.
"""
import io
import zipfile

import numpy

numpy.savez(
    "types.npz",
    f4=(numpy.arange(12, dtype=numpy.float32) * 0.5).reshape(3, 4),
    f8_fortran=numpy.asfortranarray((numpy.arange(6, dtype=numpy.float64) * 0.25).reshape(2, 3)),
    i1=numpy.array([-128, 0, 127], dtype=numpy.int8),
    u1=numpy.array([0, 255], dtype=numpy.uint8),
    i2=numpy.array([-300, 300], dtype=numpy.int16),
    u2=numpy.array([65535], dtype=numpy.uint16),
    i4=numpy.array([-70000], dtype=numpy.int32),
    u4=numpy.array([4000000000], dtype=numpy.uint32),
    i8=numpy.array([-(2 ** 40)], dtype=numpy.int64),
    u8=numpy.array([2 ** 63], dtype=numpy.uint64),
    b1=numpy.array([True, False, True]),
    scalar=numpy.float64(2.5),
    empty=numpy.zeros((0, 3), dtype=numpy.float32),
    cube=numpy.arange(24, dtype=numpy.float64).reshape(2, 3, 4),
)

with zipfile.ZipFile("versions.npz", "w", compression=zipfile.ZIP_STORED) as z:
    for major in (1, 2, 3):
        buf = io.BytesIO()
        numpy.lib.format.write_array(buf, numpy.arange(5, dtype=numpy.float64) + major, version=(major, 0))
        z.writestr("v%d.npy" % major, buf.getvalue())

numpy.savez_compressed("compressed.npz", a=numpy.arange(3.0))
numpy.savez("bigendian.npz", a=numpy.arange(3, dtype=">f4"))
numpy.savez("structured.npz", a=numpy.zeros(2, dtype=[("x", "<f4"), ("y", "<i4")]))
numpy.savez("object.npz", a=numpy.array([{"x": 1}], dtype=object))
