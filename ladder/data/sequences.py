"""Fixed-length sequences over a token stream, the held-out validation sample, and the seeded,
stateless batch order.

Sequence ``i`` is tokens ``[i L, (i+1) L)`` of the stream, EOS inside (concatenate-and-chunk,
as OLMo-core's ``NumpyFSLDataset``); only the last ``< L`` tokens of the whole stream are left
out. The order of sequences is a pure function of (seed, position), so a resumed run continues
on exactly the batches it would have seen and any number of processes read their shard of the
same global batch.
"""

from __future__ import annotations

import numpy as np

from ladder.data.errors import DataError

# Up to this many sequences an epoch's order is a numpy permutation held in memory (8 bytes per
# sequence); beyond it a keyed Feistel bijection computes positions on demand (no memory).
PERMUTATION_LIMIT = 1 << 24
VALIDATION_LIMIT = 1 << 24  # held-out sequences at most (their ids stay in memory)
VALIDATION_SEED = 20_241_204  # one validation sample for every rung and seed of a ladder


class PackedSequences:
    """A flat token array viewed as ``len // seq_len`` fixed-length sequences (EOS inside)."""

    def __init__(self, tokens: np.ndarray, seq_len: int, what: str = "train"):
        self.tokens, self.seq_len = tokens, seq_len
        self.n = len(tokens) // seq_len
        if self.n < 1:
            raise DataError(f"the {what} split has {len(tokens)} tokens, fewer than one sequence "
                            f"of train.seq_len={seq_len}; use a bigger corpus (data.max_bytes) or a "
                            "shorter train.seq_len")

    def get(self, idx: np.ndarray) -> np.ndarray:
        L = self.seq_len
        return np.stack([np.asarray(self.tokens[i * L:(i + 1) * L]) for i in idx]).astype(np.int64)


class IndexedSequences:
    """Sequences ``ids[j]`` (global sequence numbers) of a :class:`TokenFiles` stream."""

    def __init__(self, files, seq_len: int, ids, n: int):
        self.files, self.seq_len, self.ids, self.n = files, seq_len, ids, n

    def get(self, idx: np.ndarray) -> np.ndarray:
        L = self.seq_len
        return np.stack([self.files.read(int(i) * L, (int(i) + 1) * L)
                         for i in self.ids(np.asarray(idx, dtype=np.int64))]).astype(np.int64)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijective scramble of 64-bit words."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class FeistelPermutation:
    """A seeded bijection of [0, n) evaluated pointwise in O(1) memory: a balanced Feistel
    network over the next even number of bits, cycle-walked back into range."""

    def __init__(self, n: int, key):
        self.n = int(n)
        bits = max(2, (self.n - 1).bit_length())
        bits += bits % 2
        self.half = np.uint64(bits // 2)
        self.mask = np.uint64((1 << (bits // 2)) - 1)
        self.keys = [np.uint64(k) for k in np.random.default_rng(key).integers(0, 1 << 62, 6)]

    def _round_trip(self, x: np.ndarray) -> np.ndarray:
        left, right = x >> self.half, x & self.mask
        for k in self.keys:
            left, right = right, left ^ (_mix(right ^ k) & self.mask)
        return (left << self.half) | right

    def __call__(self, pos: np.ndarray) -> np.ndarray:
        x = np.asarray(pos, dtype=np.uint64)
        with np.errstate(over="ignore"):
            x = self._round_trip(x)
            out = x >= np.uint64(self.n)
            while out.any():  # < 4 rounds expected: the domain is < 4n
                x[out] = self._round_trip(x[out])
                out = x >= np.uint64(self.n)
        return x.astype(np.int64)


def permutation(n: int, key):
    """The seeded order of ``n`` items as a function of position."""
    if n <= PERMUTATION_LIMIT:
        p = np.random.default_rng(key).permutation(n)
        return lambda pos: p[pos]
    return FeistelPermutation(n, key)


class BatchSampler:
    """Sequence indices for global step ``s`` and process ``rank``: a seeded permutation per epoch,
    read in order. Stateless, so resuming at step s needs nothing but s."""

    def __init__(self, n_seqs: int, batch_seqs: int, seed: int, shuffle: bool = True,
                 rank: int = 0, world: int = 1):
        if batch_seqs % world:
            raise DataError(f"the global batch ({batch_seqs} sequences) does not split over "
                            f"{world} processes; change train.batch_tokens")
        self.n, self.batch, self.seed, self.shuffle = n_seqs, batch_seqs, seed, shuffle
        self.rank, self.world = rank, world
        self._perm: tuple[int, object] | None = None

    def _epoch_perm(self, epoch: int):
        if self._perm is None or self._perm[0] != epoch:
            p = permutation(self.n, [self.seed, epoch]) if self.shuffle else (lambda pos: pos)
            self._perm = (epoch, p)
        return self._perm[1]

    def indices(self, step: int) -> np.ndarray:
        """This process's share of global batch ``step`` (0-based)."""
        per = self.batch // self.world
        start = step * self.batch + self.rank * per
        pos = np.arange(start, start + per)
        out = np.empty(per, dtype=np.int64)
        for epoch in np.unique(pos // self.n):
            m = pos // self.n == epoch
            out[m] = self._epoch_perm(int(epoch))(pos[m] % self.n)
        return out


def held_out(n: int, k: int, seed: int = VALIDATION_SEED) -> np.ndarray:
    """``k`` distinct sequence numbers in [0, n), a seeded uniform sample, in seeded order.
    O(k) memory whatever ``n`` (numpy's choice without replacement allocates n when k > n/50)."""
    rng = np.random.default_rng(seed)
    picked = np.empty(0, dtype=np.int64)
    while picked.size < k:  # top up after collisions (few: k is small against n or drawn again)
        picked = _distinct(np.concatenate([picked, rng.integers(0, n, size=k - picked.size)]))
    return picked[rng.permutation(k)]


def _distinct(x: np.ndarray) -> np.ndarray:
    """Sorted distinct values by sorting (numpy 2.4's np.unique hashes, far slower on millions)."""
    s = np.sort(x)
    return s[np.concatenate([[True], s[1:] != s[:-1]])] if s.size else s


class SkipHeldOut:
    """Train position j -> the j-th sequence number not held out (binary search, O(k) memory)."""

    def __init__(self, held: np.ndarray):
        s = np.sort(held)
        self.gaps = s - np.arange(s.size)  # sequences not held out below each held-out one

    def __call__(self, j: np.ndarray) -> np.ndarray:
        return j + np.searchsorted(self.gaps, j, side="right")
