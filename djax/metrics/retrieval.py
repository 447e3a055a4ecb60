"""Nearest-neighbour retrieval mean average precision (mAP) per feature chunk.

Source: Q. Hu, A. Szabó, T. Portenier, P. Favaro, M. Zwicker, "Disentangling
factors of variation by mixing them", CVPR 2018, Table 2.  The representation
is split into ``n_chunks`` equal chunks.  For every (chunk, attribute) pair:

* each test image is a query, the database is all *other* test images;
* the database is ranked by L2 distance between the query's chunk and the
  database items' chunk (nearest first);
* a database item is relevant when it has the same value of the attribute as
  the query;
* the average precision (AP) of the full ranking is computed per query and
  averaged over queries (mAP).

For each attribute the best chunk is reported, together with a "random" row:
the expected mAP of a uniformly random ranking (:func:`chance_map`).

Conventions (the paper does not specify them; these are ours):

* **AP.**  ``AP = (1/R) * sum_{i relevant} precision(i)``, where ``R`` is the
  number of relevant database items and ``precision(i)`` is the fraction of
  relevant items among all database items at distance ``<= d(i)``.
* **Ties.**  Items at exactly equal distance are ranked *together*, as one
  threshold, exactly like ``sklearn.metrics.average_precision_score`` with
  ``y_score = -distance``.  This is deterministic and, unlike breaking ties by
  index, independent of the order of the database, so e.g. a collapsed chunk
  (all codes equal) scores ``R/M`` rather than something that depends on how
  the test set happens to be shuffled.
* **Distance precision.**  The codes are first centred (the per-dimension mean
  of the set, which is both the queries and the database, is subtracted; no
  distance changes).  Squared distances are then computed in float64 as
  ``|q|^2 + |x|^2 - 2 q.x`` and rounded to float32 before ranking.  The
  rounding is what makes exact duplicates of a code tie reliably even if BLAS
  rounds the float64 dot products of identical columns differently (they then
  differ in the last float64 bits and round to the same float32, except with
  probability ~2^-29 per pair).  Distances that agree to ~6e-8 relative are
  therefore also treated as ties.  The expansion's cancellation error (~1e-16
  of ``|q|^2 + |x|^2``) is far below the float32 rounding, so the order is
  that of the exact distances up to such near-ties.  Without the centring
  that error scales with the codes' offset, not their spread: codes sharing
  a large offset were ranked by rounding noise; a duplicate's distance
  may come out as a tiny positive number rather than 0, which changes no
  ranking.
* **Queries with no relevant item** (the query's attribute value occurs once in
  the set) have undefined AP: they get ``NaN`` per query and are left out of
  every mean, both in :func:`retrieval_map` and in :func:`chance_map`, so the
  model row and the random row average over the same queries.

Implementation (numpy, not ``jax.jit``: sorting is the bottleneck and XLA's CPU
sort is ~40x slower than numpy's SIMD sort, 4.3 s vs 0.11 s for 512 x 20,000
float32 on this machine).  The ranking depends only on the codes, not on the
attribute, so each block of queries is sorted once for all attributes (up to 33
per sort): the sort key holds the float32 distance's bits (non-negative floats
order like their bit patterns) above one relevance bit per attribute, so a plain
``np.sort`` (no ``argsort``) ranks the database and carries every attribute's
relevance along.  Keys are ``uint64``, or ``uint32`` (~2.5x faster to sort) when
a block's distances span few enough bit patterns, as for high-dimensional codes.
The AP sums are then computed 8 positions at a time (a per-byte lookup table of
precision numerators, see :func:`_precision_sums`) with exact corrections for
ties.  Blocks are small enough to stay in cache and run on several threads when
the machine has idle cores.  10,000 codes x 7 attributes on this project's
2-core machine: 3.1 s with both cores idle, 5.5-6 s with both busy with other
jobs (the previous one-``uint32``-sort-per-attribute implementation: 17 s and
19-20 s under the same conditions).
"""

from __future__ import annotations

import concurrent.futures
from typing import Mapping

import numpy as np

from djax.metrics import _threads

__all__ = [
    "VERSIONS",
    "average_precision_per_query",
    "retrieval_map",
    "expected_random_ap",
    "chance_map",
    "chunk_attribute_map",
    "format_map_table",
    "select_dims",
    "factor_map",
]

# Bumped whenever a metric's definition or defaults change (2: codes centred before the
# distance expansion).
VERSIONS = {"chunk_retrieval_map": "2", "retrieval_map": "2"}


def _as_codes(codes) -> np.ndarray:
    codes = np.asarray(codes)
    if codes.ndim == 1:
        codes = codes[:, None]
    if codes.ndim != 2:
        raise ValueError(f"codes must be [N, D], got shape {codes.shape}")
    codes = codes.astype(np.float64)
    if not np.all(np.isfinite(codes)):
        raise ValueError("codes contain NaN or inf")
    return codes


def _as_label_ids(labels, n: int | None = None) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be [N], got shape {labels.shape}")
    if n is not None and labels.shape[0] != n:
        raise ValueError(f"labels has {labels.shape[0]} entries, expected {n}")
    # Dense ids make the per-query relevant count a bincount lookup and allow
    # non-integer label types (strings, floats) without special cases.
    _, ids = np.unique(labels, return_inverse=True)
    return ids.reshape(-1).astype(np.int64)


def _n_relevant(ids: np.ndarray) -> np.ndarray:
    return np.bincount(ids)[ids] - 1


def _resolve_block_size(block_size: int | None, n: int) -> int:
    if block_size is None:
        return int(max(1, min(_MAX_AUTO_BLOCK, _TARGET_BLOCK_ELEMENTS // max(n, 1))))
    block_size = int(block_size)
    if block_size < 1:
        raise ValueError("block_size must be >= 1")
    return block_size


def _augment(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Query/database factors whose product is the squared distance matrix.

    ``[-2q, |q|^2, 1] . [x, 1, |x|^2] = |q - x|^2``, so one GEMM yields the
    distances without three extra full-size elementwise passes.
    """
    sq = np.einsum("ij,ij->i", codes, codes)[:, None]
    one = np.ones_like(sq)
    return np.hstack([-2.0 * codes, sq, one]), np.hstack([codes, one, sq])


# Queries per block: at most block_size (default min(512, 2^22 // N)) and at most
# 2^18 // N, so that a block's keys (2 MB of uint64) stay in cache: each numpy pass over
# them is then ~5x cheaper than over a 4M-element block.
_TARGET_BLOCK_ELEMENTS = 1 << 22
_MAX_AUTO_BLOCK = 512
_SUB_BLOCK_ELEMENTS = 1 << 18
# Threads for the blocks (at most this many; see djax.metrics._threads); below this many
# distances one thread is faster than starting a pool.
_MAX_THREADS = 8
_MIN_THREADED_ELEMENTS = 1 << 22
# Rankings of fewer items than this count relevant items in 16-bit lanes, others in 32-bit.
_LANE16_MAX_ITEMS = 1 << 16
# A labeling's relevance bits come from a [classes, N] table of its class masks when that
# is at most this big (else from comparing labels).
_MAX_MASK_BYTES = 1 << 25

# A uint64 sort key holds the 31 bits of a non-negative float32 distance above one
# relevance bit per labeling, so at most 33 labelings share one sort.
_DIST_BITS = 31
_MAX_PACKED = 64 - _DIST_BITS
# The query's own key: distance bits 0x7FFFFFFF (a NaN pattern, larger than any real
# distance, +inf included) and no relevance bit, so it sorts last in its row, ties with
# nothing and never counts towards any precision.
_SELF_DIST = (1 << _DIST_BITS) - 1


def _block_dist_bits(q_aug: np.ndarray, x_aug: np.ndarray) -> np.ndarray:
    """Squared distances rounded to float32, as ``uint32`` bits (monotone in the value)."""
    # x @ q.T, not q @ x.T: the same products, but OpenBLAS is up to 3x faster this way round
    # for a short block of queries and few dims.
    d = (x_aug @ q_aug.T).T.astype(np.float32, order="C")
    # Cancellation can give tiny negatives; clamped they become +-0.0, and -0.0's sign bit
    # is cleared below, so both map to 0.  For non-negative floats the bit pattern is
    # monotone in the value.
    np.maximum(d, np.float32(0.0), out=d)
    bits = d.view(np.uint32)
    bits &= np.uint32(0x7FFFFFFF)
    return bits


_POPCOUNT8 = np.array([bin(v).count("1") for v in range(256)], dtype=np.uint8)
_byte_table_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
_LE64 = np.dtype("<u8")


def _byte_tables(m: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-byte precision numerators for rankings of ``m`` items: two ``[ceil(m/8) * 256]``.

    Entry ``p * 256 + v`` is for byte ``p`` (positions ``8p .. 8p+7``, bit i = position
    ``j_i = 8p + i``) holding the relevance bits v: ``sum_{i in v} 1/(j_i+1)`` and
    ``sum_{i in v} r_i/(j_i+1)``, where ``r_i`` is the number of bits of v at or below i.
    """
    tables = _byte_table_cache.get(m)
    if tables is None:
        n_bytes = (m + 7) // 8
        w = np.zeros(n_bytes * 8)
        w[:m] = 1.0 / np.arange(1, m + 1, dtype=np.float64)
        w = w.reshape(n_bytes, 8)
        bits = ((np.arange(256)[:, None] >> np.arange(8)[None, :]) & 1).astype(np.float64)
        rank = np.cumsum(bits, axis=1) * bits
        tables = ((w @ bits.T).reshape(-1), (w @ rank.T).reshape(-1))
        if len(_byte_table_cache) > 4:
            _byte_table_cache.clear()
        _byte_table_cache[m] = tables
    return tables


def _transpose8(x: np.ndarray) -> np.ndarray:
    """Transpose the 8x8 bit matrix in each uint64: bit ``8r + c`` -> bit ``8c + r``."""
    u = np.uint64
    for shift, mask in ((7, 0x00AA00AA00AA00AA), (14, 0x0000CCCC0000CCCC), (28, 0x00000000F0F0F0F0)):
        t = (x ^ (x >> u(shift))) & u(mask)
        x = x ^ t ^ (t << u(shift))
    return x


def _byte_popcounts(x: np.ndarray) -> np.ndarray:
    """Popcount of each byte of each uint64, in place of the byte."""
    u = np.uint64
    x = x - ((x >> u(1)) & u(0x5555555555555555))
    x = (x & u(0x3333333333333333)) + ((x >> u(2)) & u(0x3333333333333333))
    return (x + (x >> u(4))) & u(0x0F0F0F0F0F0F0F0F)


def _precision_sums(relbits: np.ndarray, tied: np.ndarray) -> np.ndarray:
    """Sum over relevant items of precision, per row and labeling: ``[B, 8]``.

    ``relbits [B, M]`` (uint8): bit a = item relevant for labeling a, items in rank order;
    ``tied [B, M-1]``: item j has the same distance as item j + 1.

    Without ties the k-th relevant item (1-based) at 0-based position j has precision
    ``k / (j + 1)``.  Eight positions make a byte of each labeling's relevance bits (one
    8x8 bit transpose per uint64 of ``relbits``); with ``c`` the number of relevant items
    before byte p, the byte contributes ``c * T0[p, v] + T1[p, v]`` (:func:`_byte_tables`),
    so the work is a table lookup per 8 positions and labeling.  The counts ``c`` come from
    one cumulative sum of uint64 words holding several labelings' byte popcounts in 16-bit
    (32-bit for M >= 2^16) lanes; a count never exceeds ``M - 1``, so lanes do not overflow.
    Ties: a relevant item in a tie group takes the count and position of the group's last
    item; a few ties are corrected item by item afterwards, many (at least a quarter of the
    positions tied to the next) are summed group by group instead of using the tables.
    """
    b, m = relbits.shape
    n_bytes = (m + 7) // 8
    t0, t1 = _byte_tables(m)
    padded = np.zeros((b, n_bytes * 8), np.uint8)
    padded[:, :m] = relbits
    # Byte-major from here on ([n_bytes, B, ...]): the table lookups of one byte position
    # then hit one 2 KB slice of each table.
    words = np.ascontiguousarray(_transpose8(padded.view(_LE64).astype(np.uint64, copy=False)).T)
    packed = words.astype(_LE64, copy=False).view(np.uint8).reshape(n_bytes, b, 8)  # [p, B, a]

    # before[p, b, a]: relevant items of labeling a at positions < 8p.
    pops = _byte_popcounts(words)
    lane = 16 if m < _LANE16_MAX_ITEMS else 32
    k = lane // 8
    lane_mask = np.uint64(sum(0xFF << s for s in range(0, 64, lane)))
    before = np.empty((n_bytes, b, 8))
    for s in range(k):
        part = (pops >> np.uint64(8 * s)) & lane_mask if s else pops & lane_mask
        csum = np.cumsum(part, axis=0)
        csum -= part
        before[..., s::k] = csum.astype(_LE64, copy=False).view(f"<u{lane // 8}").reshape(n_bytes, b, 8 // k)

    def count_at(rows, cols):  # relevant items at positions <= cols, per labeling: [P, 8]
        low = ((2 << (cols % 8)) - 1).astype(np.uint8)[:, None]
        return before[cols // 8, rows] + _POPCOUNT8.take(packed[cols // 8, rows] & low)

    links = np.flatnonzero(tied)
    if 4 * links.size >= b * m:
        # Mostly ties (e.g. a collapsed or discrete code): sum over tie groups instead.  A
        # group ending at position e with count c_e (c_s before it) holds c_e - c_s relevant
        # items, each with precision c_e / (e + 1).  Every row ends a group (its last item).
        ends = np.flatnonzero(np.concatenate([~tied, np.ones((b, 1), bool)], axis=1))
        rows, cols = ends // m, ends % m
        count = count_at(rows, cols)
        first = np.ones(ends.size, dtype=bool)
        first[1:] = rows[1:] != rows[:-1]
        prev = np.zeros_like(count)
        prev[1:] = count[:-1]
        prev[first] = 0.0
        contrib = (count - prev) * count / (cols + 1.0)[:, None]
        return np.add.reduceat(contrib, np.flatnonzero(first), axis=0)

    idx = np.add(packed, (np.arange(n_bytes, dtype=np.intp) * 256)[:, None, None], dtype=np.intp)
    sums = np.einsum("pba,pba->ba", before, t0.take(idx)) + np.einsum("pba->ba", t1.take(idx))
    if links.size:
        # A few ties: correct the relevant items in tie groups.  Position p of row r (flat
        # r*M + p) is tied with p + 1; consecutive flat links belong to one group (links of
        # different rows are >= 2 apart).
        flat_links = links + links // (m - 1)
        last = np.ones(flat_links.size, dtype=bool)
        last[:-1] = flat_links[1:] != flat_links[:-1] + 1
        group_ends = flat_links[last] + 1
        members = np.union1d(flat_links, flat_links + 1)
        ends = group_ends[np.searchsorted(group_ends, members)]
        rows, cols, end_cols = members // m, members % m, ends % m
        rel = (packed[cols // 8, rows] >> (cols % 8).astype(np.uint8)[:, None]) & np.uint8(1)
        delta = np.where(rel, count_at(rows, end_cols) / (end_cols + 1.0)[:, None]
                         - count_at(rows, cols) / (cols + 1.0)[:, None], 0.0)
        np.add.at(sums, rows, delta)
    return sums


def _relevance_masks(group: list[np.ndarray]) -> list[np.ndarray | None]:
    """Per labeling a, ``[classes, N]`` rows ``(ids == v) << a`` (None if that is large)."""
    g = len(group)
    rb_t = _relbits_dtype(g)
    masks = []
    for a, ids in enumerate(group):
        k = int(ids.max()) + 1 if ids.size else 0
        if k * ids.size * np.dtype(rb_t).itemsize > _MAX_MASK_BYTES:
            masks.append(None)
            continue
        mask = np.zeros((k, ids.size), rb_t)
        mask[ids, np.arange(ids.size)] = rb_t(1) << rb_t(a)
        masks.append(mask)
    return masks


def _relbits_dtype(g: int):
    return np.uint8 if g <= 8 else np.uint16 if g <= 16 else np.uint32 if g <= 32 else np.uint64


def _sort_keys(dist_bits: np.ndarray, group: list[np.ndarray], masks: list, s0: int) -> np.ndarray:
    """Row-sorted ``distance_bits << g | relevance bits`` for the queries ``s0 ..``, the
    query itself last (``dist_bits`` is modified at the queries' own entries)."""
    g = len(group)
    b, m = dist_bits.shape
    rb_t = _relbits_dtype(g)
    relbits = np.zeros((b, m), rb_t)
    bit = np.empty((b, m), rb_t)
    eq = None
    for a, (ids, mask) in enumerate(zip(group, masks)):
        if mask is not None:  # the query's row of the mask: one gather
            np.take(mask, ids[s0:s0 + b], axis=0, out=bit)
        else:
            if eq is None:
                eq = np.empty((b, m), np.bool_)
            np.equal(ids[s0:s0 + b, None], ids[None, :], out=eq)
            np.left_shift(eq, rb_t(a), out=bit, dtype=rb_t)
        relbits |= bit
    rows = np.arange(b)
    # The query's own distance (~0) must not widen the range below: overwrite it (in place,
    # its key is replaced anyway) with another distance of its row.
    dist_bits[rows, rows + s0] = dist_bits[rows, (rows + s0 + 1) % m]
    lo, hi = int(dist_bits.min()), int(dist_bits.max())
    if g < 32 and hi - lo < (1 << (32 - g)) - 1:
        # All distances of the block within a range of 2^(32-g) float32 bit patterns (e.g.
        # high-dimensional codes, whose distances concentrate): uint32 keys of the offset
        # bits, which sort ~2.5x faster and rank identically.
        keys = np.subtract(dist_bits, np.uint32(lo), dtype=np.uint32)
        keys <<= np.uint32(g)
        keys |= relbits
        keys[rows, rows + s0] = np.uint32(0xFFFFFFFF << g & 0xFFFFFFFF)  # above all, no bits
    else:
        keys = np.left_shift(dist_bits, np.uint64(g), dtype=np.uint64)
        keys |= relbits
        keys[rows, rows + s0] = np.uint64(_SELF_DIST << g)
    keys.sort(axis=1)
    return keys


def _sub_block_sums(q_aug: np.ndarray, x_aug: np.ndarray, groups: list, s0: int) -> np.ndarray:
    """Sums of precision ``[rows, A]`` for the queries ``s0 ..`` (rows of ``q_aug``);
    ``groups``: (labelings, their masks) sharing one sort each."""
    dist_bits = _block_dist_bits(q_aug, x_aug)
    out = []
    for group, masks in groups:
        g = len(group)
        keys = _sort_keys(dist_bits, group, masks, s0)
        tied = (keys[:, 1:] ^ keys[:, :-1]) < np.uint64(1 << g)
        for a1 in range(0, g, 8):
            c = min(8, g - a1)
            byte = (keys >> np.uint64(a1) if a1 else keys).astype(np.uint8)
            if c < 8:
                byte &= np.uint8((1 << c) - 1)
            out.append(_precision_sums(byte, tied)[:, :c])
    return np.concatenate(out, axis=1)


def _n_threads() -> int:
    return _threads.n_threads(_MAX_THREADS)


def _ap_multi(codes: np.ndarray, id_columns: list[np.ndarray], block_size: int | None) -> np.ndarray:
    """AP per query for several labelings sharing one set of codes: [N, A].

    The ranking depends only on the codes, so distances are computed and sorted once per
    block of queries for up to 33 labelings at a time (their relevance bits ride along in
    the sort key) and reused for every labeling.  Blocks are small enough to stay in cache
    and run on a few threads (numpy and BLAS release the GIL; BLAS itself is limited to one
    thread meanwhile); each writes its own rows, so results do not depend on the threading.
    """
    n = codes.shape[0]
    n_lab = len(id_columns)
    out = np.full((n, n_lab), np.nan)
    if n < 2 or n_lab == 0:
        return out
    sub = max(1, min(_resolve_block_size(block_size, n), _SUB_BLOCK_ELEMENTS // n))
    # The expansion's cancellation error scales with |q|^2 + |x|^2: measured from the
    # mean, that is the spread of the codes, not their offset.
    q_aug, x_aug = _augment(codes - codes.mean(axis=0))
    n_rel = np.stack([_n_relevant(ids) for ids in id_columns], axis=1)
    sums = np.zeros((n, n_lab))

    groups = [(id_columns[a:a + _MAX_PACKED], _relevance_masks(id_columns[a:a + _MAX_PACKED]))
              for a in range(0, n_lab, _MAX_PACKED)]

    def run(s0):
        s1 = min(s0 + sub, n)
        sums[s0:s1] = _sub_block_sums(q_aug[s0:s1], x_aug, groups, s0)

    # One BLAS thread: a block's product is small (threads cost more than they save, much
    # more on a busy machine); the blocks themselves run on several threads when N is large.
    from threadpoolctl import threadpool_limits

    n_threads = _n_threads() if n * n >= _MIN_THREADED_ELEMENTS else 1
    with threadpool_limits(limits=1, user_api="blas"):
        if n_threads == 1:
            for s0 in range(0, n, sub):
                run(s0)
        else:
            with concurrent.futures.ThreadPoolExecutor(n_threads) as pool:
                list(pool.map(run, range(0, n, sub)))
    has_rel = n_rel > 0
    out[has_rel] = sums[has_rel] / n_rel[has_rel]
    return out


def average_precision_per_query(codes, labels, *, block_size: int | None = None) -> np.ndarray:
    """Exact AP of the full L2 nearest-neighbour ranking for every query.

    Args:
      codes: ``[N, D]`` features (``[N]`` is treated as ``D = 1``).
      labels: ``[N]`` attribute values; relevant <=> equal to the query's.
      block_size: at most this many queries per block (memory is
        ``O(block_size * N)`` per thread); ``None``: ``min(512, 2**22 // N)``.
        Blocks are also capped at ``2**18 // N`` queries, which keeps their
        keys in cache.  Results do not depend on it (barring last-bit BLAS
        rounding differences that move a float32 near-tie).

    Returns:
      ``[N]`` float64 AP per query, the query itself excluded from its own
      database; ``NaN`` where the query has no relevant item.  Ties in distance
      are one threshold (see module docstring), which equals
      ``sklearn.metrics.average_precision_score(relevant, -distance)``.
    """
    codes = _as_codes(codes)
    ids = _as_label_ids(labels, codes.shape[0])
    return _ap_multi(codes, [ids], block_size)[:, 0]


def retrieval_map(codes, labels, *, block_size: int | None = None) -> float:
    """Mean over queries of :func:`average_precision_per_query` (NaNs skipped)."""
    ap = average_precision_per_query(codes, labels, block_size=block_size)
    return _nanmean(ap)


def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    valid = ~np.isnan(x)
    return float(x[valid].mean()) if valid.any() else float("nan")


def expected_random_ap(n_relevant, n_database):
    """Exact expected AP of a uniformly random ranking.

    With ``R`` relevant among ``M`` database items, a given relevant item sits
    at rank ``r`` uniform on ``1..M``, and each of the other ``R-1`` relevant
    items is ahead of it with probability ``(r-1)/(M-1)``, so

        E[precision at its rank] = (1/M) sum_r (1 + (r-1)(R-1)/(M-1)) / r.

    This is the same for every relevant item, hence for their mean, giving

        E[AP] = (R-1)/(M-1) + H_M (M-R) / (M (M-1)),   H_M = sum_{k<=M} 1/k,

    for ``M >= 2``; ``E[AP] = 1`` when ``R = M``, ``NaN`` when ``R = 0``.  It is
    the relevant fraction ``R/M`` plus ``(M-R)(H_M - 1)/(M(M-1)) > 0`` for
    ``0 < R < M``: a relevant item's precision at its own rank counts the item
    itself, which weighs most at the top ranks.  Vectorised over
    ``n_relevant``; ``n_database`` is a scalar.
    """
    r = np.asarray(n_relevant, dtype=np.float64)
    m = int(n_database)
    if m < 1:
        return np.full_like(r, np.nan)
    if m == 1:
        return np.where(r >= 1, 1.0, np.nan)
    h_m = float(np.sum(1.0 / np.arange(1, m + 1, dtype=np.float64)))
    e = (r - 1.0) / (m - 1.0) + h_m * (m - r) / (m * (m - 1.0))
    return np.where(r >= 1, e, np.nan)


def chance_map(labels, *, exact: bool = True) -> float:
    """Expected mAP of a uniformly random ranking, from label frequencies.

    For a query with value ``v`` (``n_v`` occurrences in ``N`` items) the
    database holds ``M = N - 1`` items of which ``R = n_v - 1`` are relevant.
    ``exact=True`` averages :func:`expected_random_ap` ``(R, M)`` over queries.
    ``exact=False`` averages the common approximation ``R / M`` (the relevant
    fraction), which underestimates by ``(M-R)(H_M-1)/(M(M-1)) < ln(M)/M``
    per query, e.g. < 5e-4 for N = 20,000.  Queries with ``R = 0`` are skipped,
    as in :func:`retrieval_map`.  Uniform ``k``-class labels give ~``1/k``.
    """
    ids = _as_label_ids(labels)
    n = ids.shape[0]
    n_rel = _n_relevant(ids)
    if exact:
        per_query = expected_random_ap(n_rel, n - 1)
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            per_query = np.where(n_rel > 0, n_rel / max(n - 1, 1), np.nan)
    return _nanmean(per_query)


def chunk_attribute_map(
    features,
    factors: Mapping[str, np.ndarray],
    n_chunks: int,
    *,
    block_size: int | None = None,
) -> dict:
    """Hu et al. (2018) Table 2: retrieval mAP for every (chunk, attribute).

    Args:
      features: ``[N, n_chunks * d]``; chunk ``c`` is columns
        ``[c*d, (c+1)*d)``.
      factors: attribute name -> ``[N]`` attribute values.
      n_chunks: number of equal chunks.
      block_size: see :func:`average_precision_per_query`.

    Returns a dict with
      ``attributes`` (list of names, in ``factors`` order), ``n_chunks``,
      ``map`` (``[n_chunks, n_attributes]`` array), ``chunk_average``
      (``[n_chunks]``, mean over attributes of each chunk's row),
      ``best_chunk`` / ``best_map`` (name -> chunk index / its mAP; first chunk
      wins exact ties), ``best_average`` (mean of ``best_map`` over attributes),
      ``chance`` (name -> :func:`chance_map`) and ``chance_average``.
    """
    features = _as_codes(features)
    n, dim = features.shape
    n_chunks = int(n_chunks)
    if n_chunks < 1 or dim % n_chunks:
        raise ValueError(f"feature dim {dim} is not divisible into {n_chunks} chunks")
    names = list(factors)
    if not names:
        raise ValueError("factors is empty")
    id_columns = [_as_label_ids(factors[k], n) for k in names]
    d = dim // n_chunks

    table = np.empty((n_chunks, len(names)))
    for c in range(n_chunks):
        ap = _ap_multi(np.ascontiguousarray(features[:, c * d:(c + 1) * d]), id_columns, block_size)
        table[c] = [_nanmean(ap[:, a]) for a in range(len(names))]

    best_idx = [int(np.argmax(np.nan_to_num(table[:, a], nan=-np.inf))) for a in range(len(names))]
    best_map = {k: float(table[best_idx[a], a]) for a, k in enumerate(names)}
    chance = {k: chance_map(factors[k]) for k in names}
    return {
        "attributes": names,
        "n_chunks": n_chunks,
        "map": table,
        "chunk_average": table.mean(axis=1),
        "best_chunk": {k: best_idx[a] for a, k in enumerate(names)},
        "best_map": best_map,
        "best_average": float(np.mean(list(best_map.values()))),
        "chance": chance,
        "chance_average": float(np.mean(list(chance.values()))),
    }


def format_map_table(result: Mapping, *, precision: int = 3) -> str:
    """Render :func:`chunk_attribute_map` output as a plain-text table.

    Rows: ``chunk 0 .. chunk n-1``, ``best`` (the best chunk's mAP per
    attribute, with its index in brackets), ``random``; columns: attributes,
    then ``average``.
    """
    names = list(result["attributes"])
    table = np.asarray(result["map"])
    fmt = f"{{:.{precision}f}}"

    rows = [["", *names, "average"]]
    for c in range(table.shape[0]):
        rows.append([f"chunk {c}", *(fmt.format(v) for v in table[c]), fmt.format(result["chunk_average"][c])])
    rows.append([
        "best",
        *(f"{fmt.format(result['best_map'][k])} [{result['best_chunk'][k]}]" for k in names),
        fmt.format(result["best_average"]),
    ])
    rows.append(["random", *(fmt.format(result["chance"][k]) for k in names), fmt.format(result["chance_average"])])

    widths = [max(len(r[j]) for r in rows) for j in range(len(rows[0]))]
    lines = []
    for i, r in enumerate(rows):
        lines.append("  ".join(r[0].ljust(widths[0]) if j == 0 else r[j].rjust(widths[j]) for j in range(len(r))))
        if i == 0 or i == table.shape[0]:
            lines.append("-" * len(lines[-1]))
    return "\n".join(lines)


def select_dims(codes, dims=None) -> np.ndarray:
    """Columns of ``codes [N, D]`` named by ``dims``: ``None`` (all), a ``slice``, a
    ``"start:stop"`` string (python slice syntax, e.g. ``"0:2"`` or ``"64:"``), an int, or a
    sequence of column indices."""
    codes = np.asarray(codes)
    if codes.ndim == 1:
        codes = codes[:, None]
    if dims is None or (isinstance(dims, str) and dims.strip() in ("", ":")):
        return codes
    if isinstance(dims, str):
        parts = [int(p) if p.strip() else None for p in dims.split(":")]
        if len(parts) == 1:
            return codes[:, [parts[0]]]
        return codes[:, slice(*parts)]
    if isinstance(dims, slice):
        return codes[:, dims]
    if isinstance(dims, (int, np.integer)):
        return codes[:, [int(dims)]]
    return codes[:, np.asarray(list(dims), dtype=np.int64)]


def factor_map(codes, factors: Mapping[str, np.ndarray], *, dims=None,
               block_size: int | None = None) -> dict:
    """Retrieval mAP per factor from one slice of the code (Hu et al. Table 2 for one chunk,
    or e.g. Mathieu's specified part s): every item queries all others by L2 distance on
    ``codes[:, dims]`` (see :func:`select_dims`); relevant = same value of the factor.

    Returns ``{"map": {name: mAP}, "average", "chance": {name: chance_map}, "chance_average",
    "dims": str(dims)}``.
    """
    sub = _as_codes(select_dims(codes, dims))
    names = list(factors)
    if not names:
        raise ValueError("factors is empty")
    ids = [_as_label_ids(factors[k], sub.shape[0]) for k in names]
    ap = _ap_multi(np.ascontiguousarray(sub), ids, block_size)
    maps = {k: _nanmean(ap[:, a]) for a, k in enumerate(names)}
    chance = {k: chance_map(factors[k]) for k in names}
    return {"map": maps, "average": float(np.mean(list(maps.values()))), "chance": chance,
            "chance_average": float(np.mean(list(chance.values()))),
            "dims": "all" if dims is None else str(dims)}
