"""Integer codes for string ids and a linear-time duplicate finder, shared by the CSV readers and the
DISC21 metrics (numpy only, so the core can use them without importing a plugin).

- :func:`encode_ids` maps string arrays to int64 codes, equal strings to equal codes across arrays;
  ids of one fixed form (``Q01234``) are read straight from their characters, with no sort;
- :func:`smallest_duplicate` finds a repeated int64 key by counting hashed keys (no sort of all keys).
"""

from __future__ import annotations

import numpy as np

_MAX_DENSE = 10_000_000  # digit codes below this are used directly as table indices


def _as_str(a: np.ndarray) -> np.ndarray:
    """Native-order, contiguous str array (the digit fast path views its characters as uint32)."""
    a = np.asarray(a)
    if a.dtype.kind != "U" or not a.dtype.isnative:
        a = a.astype(str)
    return np.ascontiguousarray(a)


def _digit_codes(arrays: list[np.ndarray]) -> list[np.ndarray] | None:
    """Fast path for ids of one fixed form, e.g. ``Q01234``: same length, same prefix, then digits.

    Such ids map one-to-one to the integer value of their digits. Returns None when the ids do not
    all share one such form (the caller falls back to a sort-based factorization).
    """
    if any(len(a) and a.dtype.itemsize == 0 for a in arrays):
        return None
    mats = [a.view(np.uint32).reshape(len(a), -1) for a in arrays if len(a)]
    if not mats:
        return [np.zeros(0, dtype=np.int64) for _ in arrays]
    width = mats[0].shape[1]
    if any(m.shape[1] != width for m in mats) or max(int(m.max()) for m in mats) > 127:
        return None  # different lengths, or not ASCII (the byte copies below would wrap)
    chars = [m.astype(np.uint8) for m in mats]  # (n, width), one byte per character
    # The form is the first id's: its trailing digits (at most 18, for int64), after a prefix.
    template = chars[0][0]
    digit = (template >= 48) & (template <= 57)
    n_digits = 0
    while n_digits < width and digit[width - 1 - n_digits]:
        n_digits += 1
    n_digits = min(n_digits, 18)
    prefix = width - n_digits
    if n_digits == 0:
        return None
    # Every id has that form iff its prefix equals the template's and it has no other non-digit
    # (NUL padding of a shorter id counts as one): checked on the flat bytes, not per column.
    prefix_non_digits = int(np.count_nonzero(~digit[:prefix]))
    for c in chars:
        if np.count_nonzero(c.ravel() - np.uint8(48) > 9) != len(c) * prefix_non_digits:
            return None
        if not all((c[:, i] == template[i]).all() for i in range(prefix)):
            return None
    # Horner's rule on the character codes in unsigned (wrapping) arithmetic, then one subtraction of
    # the '0' offsets: exact modulo 2**bits, and the true value fits (<= 9 digits in uint32).
    acc_t = np.uint32 if n_digits <= 9 else np.uint64
    offset = acc_t(sum(48 * 10**k for k in range(n_digits)) % (1 << (8 * np.dtype(acc_t).itemsize)))
    found = iter(chars)
    out = []
    for a in arrays:
        if not len(a):
            out.append(np.zeros(0, dtype=np.int64))
            continue
        c = next(found)
        acc = c[:, prefix].astype(acc_t)
        for i in range(prefix + 1, width):
            acc *= acc_t(10)
            acc += c[:, i]
        acc -= offset
        out.append(acc.astype(np.int64))
    return out


def encode_ids(*arrays: np.ndarray) -> tuple[list[np.ndarray], int]:
    """Map string arrays to int64 codes in ``[0, size)``: equal strings get equal codes across arrays.

    Codes follow the strings' order (digit values, or ranks among the distinct strings).
    """
    strs = [_as_str(a) for a in arrays]
    codes = _digit_codes(strs)
    if codes is not None:
        top = max((int(c.max()) for c in codes if len(c)), default=-1) + 1
        if top <= _MAX_DENSE:
            return codes, top
        flat = np.concatenate(codes)
    else:
        flat = np.concatenate(strs) if strs else np.zeros(0, dtype=str)
    uniq, inverse = np.unique(flat, return_inverse=True)
    bounds = np.cumsum([0] + [len(a) for a in arrays])
    return [inverse[bounds[i] : bounds[i + 1]].astype(np.int64) for i in range(len(arrays))], len(uniq)


#: Odd 64-bit multipliers (golden ratio, murmur/xxhash constants): one per counting round.
_HASH_MULTIPLIERS = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x27D4EB2F165667C5)


def smallest_duplicate(keys: np.ndarray) -> int | None:
    """Smallest value occurring more than once in non-negative int64 ``keys``, or None.

    Each round hashes the keys into a table 2-4x their number and keeps only those sharing a slot:
    every duplicate stays, 60-80% of distinct keys leave. Only the few left are sorted. Inputs that
    defeat the hash are still exact, just sorted whole.
    """
    k = np.ascontiguousarray(keys, dtype=np.int64)
    for mult in _HASH_MULTIPLIERS:
        if len(k) < 4096:
            break
        bits = min(max(len(k).bit_length() + 1, 12), 20)  # 2-4 slots per key; 8 MB table at most
        slot = ((k.view(np.uint64) * np.uint64(mult)) >> np.uint64(64 - bits)).view(np.int64)
        shared = (np.bincount(slot, minlength=1 << bits) > 1)[slot]  # gathers from 1 byte/slot, not 8
        before = len(k)
        k = np.compress(shared, k)  # a random boolean mask as an index is ~6x slower (branchy)
        if 2 * len(k) > before:
            break  # many true duplicates (or a hostile input): sorting is as good
    srt = np.sort(k)
    same = srt[1:] == srt[:-1]
    return int(srt[1:][same][0]) if same.any() else None
