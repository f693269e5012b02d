"""Prototype of the low-memory build fix (README.md, "build memory"): the same suffix array as
`kiban.index.build._build_shard` (pydivsufsort's byte-level libdivsufsort over big-endian token
bytes, suffixes at even byte offsets kept), without pydivsufsort.divsufsort's temporaries: the
loaded tokens are byteswapped in place (np.fromfile gives a private copy), libdivsufsort writes
into one preallocated int32 array, and the even entries are compacted in place by a numba loop.

    /usr/bin/time -f "%M KiB maxrss %e s" python proto_lowmem_sa.py SHARD_TOKENS.bin [KIBAN_SA.npy]
"""
import sys, time, ctypes, numpy as np
from numba import njit
from pydivsufsort.divsufsort import libdivsufsort, _get_bytes_pointer

@njit(cache=False)
def compact_even(sa):
    j = 0
    for i in range(sa.shape[0]):
        p = sa[i]
        if (p & 1) == 0:
            sa[j] = p >> 1
            j += 1
    return j

tok = np.fromfile(sys.argv[1], dtype=np.uint16)
compact_even(np.zeros(2, np.int32))  # compile
t = time.perf_counter()
tok.byteswap(inplace=True)            # big-endian bytes in place: byte order == token order
b = tok.view(np.uint8)
n = len(b)
sa = np.empty(n, dtype=np.int32)
rv = libdivsufsort.divsufsort(_get_bytes_pointer(b), sa.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)), ctypes.c_int32(n))
assert rv == 0
t1 = time.perf_counter()
k = compact_even(sa)
sa = sa[:k]
t2 = time.perf_counter()
print("sort", round(t1 - t, 2), "compact", round(t2 - t1, 2), "n", k)
if len(sys.argv) > 2:
    ref = np.load(sys.argv[2], mmap_mode="r")
    print("identical to kiban's sa:", bool(np.array_equal(ref, sa)))
