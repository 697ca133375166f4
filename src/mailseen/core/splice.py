"""What tagging changed in a stored message, kept so that its copies need no parsing.

A message is tagged once when it is queued, with a stand-in where each copy's token goes
(services/sending.py). What that tagging changed is one run of bytes: ``raw[start:end]``
replaced by ``insert`` (the pixel, the refusal line, and whatever re-encoding a
quoted-printable line around them took). Kept beside the stored message, it turns
delivering a copy into slicing and joining bytes: no MIME parse, no HTML scan, no
encoding. ``key`` names the tag it was made with (the pixel's base URL, the refusal line's
words): a copy whose tag would differ now (the settings changed while it waited) is tagged
afresh instead.
"""

from __future__ import annotations

import hashlib

from ..records import Splice

__all__ = ["Splice", "common_prefix", "common_suffix", "splice_of", "spliced", "tag_key"]


def tag_key(tag: str) -> str:
    """A short name for the HTML a tagging put in (stand-in token and all)."""
    return hashlib.sha256(tag.encode()).hexdigest()[:16]


def splice_of(raw: bytes, tagged: bytes, key: str, limit: int = 65536) -> Splice | None:
    """The one run of bytes that turns ``raw`` into ``tagged``; None when they are the same
    or the run is longer than ``limit`` bytes (tagging changed bodies far apart: storing
    the message twice over is not worth it, and copies are tagged one by one)."""
    if raw == tagged:
        return None
    start = common_prefix(raw, tagged, min(len(raw), len(tagged)))
    # The common end may not overlap the common start in either message.
    end_len = common_suffix(raw, tagged, min(len(raw), len(tagged)) - start)
    insert = tagged[start:len(tagged) - end_len]
    if len(insert) > limit:
        return None
    return Splice(start, len(raw) - end_len, insert, key)


def spliced(raw: bytes, splice: Splice) -> bytes:
    """``raw`` with the splice applied: the tagged message."""
    return raw[:splice.start] + splice.insert + raw[splice.end:]


def common_prefix(a: bytes, b: bytes, limit: int) -> int:
    """How many leading bytes ``a`` and ``b`` share, at most ``limit``; compared in slices
    (C loops) rather than byte by byte."""
    lo, step = 0, 4096
    while lo < limit and a[lo : min(lo + step, limit)] == b[lo : min(lo + step, limit)]:
        lo += step
    if lo >= limit:
        return limit
    hi = min(lo + step, limit)  # a[:lo] == b[:lo] and a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def common_suffix(a: bytes, b: bytes, limit: int) -> int:
    """How many trailing bytes ``a`` and ``b`` share, at most ``limit``."""
    lo, step = 0, 4096
    while lo < limit:
        n = min(lo + step, limit)
        if a[len(a) - n : len(a) - lo] != b[len(b) - n : len(b) - lo]:
            break
        lo = n
    else:
        return limit
    hi = min(lo + step, limit)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[len(a) - mid : len(a) - lo] == b[len(b) - mid : len(b) - lo]:
            lo = mid
        else:
            hi = mid
    return lo
