#!/usr/bin/python3
"""Generates tests/data/engram_vectors.json from the reference Engram addressing.

This re-states the algorithm of the public reference demo (engram_demo_v1.py, deepseek-ai/Engram)
with numpy and sympy only: numpy's default_rng for the per-layer multipliers, sympy.isprime for the
distinct-prime head sizes, numpy int64 arithmetic (wrapping products, floor modulo) for the hash.
The C++ client must reproduce every number in the output bit for bit.

Run with Debian's python (it has numpy and sympy):
    /usr/bin/python3 tests/tools/gen_engram_vectors.py > tests/data/engram_vectors.json
"""
import json
import sys

import numpy as np
from sympy import isprime

PRIME_1 = 10007


def find_next_prime(start, seen):
    candidate = start + 1
    while True:
        if isprime(candidate) and candidate not in seen:
            return candidate
        candidate += 1


class ReferenceHash:
    def __init__(self, spec):
        self.spec = spec
        self.max_n = spec["max_ngram_size"]
        self.n_head = spec["n_head_per_ngram"]
        self.layer_ids = spec["layer_ids"]
        vocab = spec["compressed_vocab_size"]
        comp = spec.get("compression")
        self.lookup = None if comp is None else np.asarray(comp, dtype=np.int64)
        pad_id = spec["pad_id"]
        self.pad = int(self.lookup[pad_id]) if self.lookup is not None else int(pad_id)

        max_long = np.iinfo(np.int64).max
        m_max = int(max_long // vocab)
        half_bound = max(1, m_max // 2)
        self.multipliers = {}
        for layer in self.layer_ids:
            g = np.random.default_rng(int(spec["seed"] + PRIME_1 * int(layer)))
            r = g.integers(low=0, high=half_bound, size=(self.max_n,), dtype=np.int64)
            self.multipliers[layer] = r * 2 + 1

        seen = set()
        self.head_sizes = {}
        for layer in self.layer_ids:
            per_order = []
            for n in range(2, self.max_n + 1):
                start = spec["engram_vocab_size"][n - 2] - 1
                heads = []
                for _ in range(self.n_head):
                    p = find_next_prime(start, seen)
                    seen.add(p)
                    heads.append(p)
                    start = p
                per_order.append(heads)
            self.head_sizes[layer] = per_order

    def compress(self, ids):
        x = np.asarray(ids, dtype=np.int64)
        if self.lookup is None:
            return x
        out = x.copy()
        pos = x >= 0
        out[pos] = self.lookup[x[pos]]
        return out

    def layer_row_ids(self, x, layer):
        B, T = x.shape
        m = self.multipliers[layer]

        def shift(k):
            if k == 0:
                return x
            return np.pad(x, ((0, 0), (k, 0)), mode="constant", constant_values=self.pad)[:, :T]

        shifts = [shift(k) for k in range(self.max_n)]
        flat_sizes = [p for order in self.head_sizes[layer] for p in order]
        offsets = np.concatenate([[0], np.cumsum(flat_sizes)[:-1]]).astype(np.int64)
        cols = []
        with np.errstate(over="ignore"):
            for n in range(2, self.max_n + 1):
                mix = shifts[0] * m[0]
                for k in range(1, n):
                    mix = np.bitwise_xor(mix, shifts[k] * m[k])
                for j in range(self.n_head):
                    p = self.head_sizes[layer][n - 2][j]
                    cols.append(mix % np.int64(p))
        hashes = np.stack(cols, axis=2)
        return hashes + offsets[None, None, :]

    def case(self, name, tokens):
        x = self.compress(tokens)
        out = {"name": name, "spec": self.spec, "tokens": tokens, "layers": {}}
        for layer in self.layer_ids:
            sizes = self.head_sizes[layer]
            out["layers"][str(layer)] = {
                "multipliers": [int(v) for v in self.multipliers[layer]],
                "head_sizes": sizes,
                "table_rows": int(sum(sum(o) for o in sizes)),
                "row_ids": self.layer_row_ids(x, layer).tolist(),
            }
        return out


def base_spec(**over):
    spec = {
        "engram_vocab_size": [646400, 646400],
        "max_ngram_size": 3,
        "n_embed_per_ngram": 512,
        "n_head_per_ngram": 8,
        "layer_ids": [1, 15],
        "pad_id": 2,
        "seed": 0,
        "compressed_vocab_size": 128000,
    }
    spec.update(over)
    return spec


def numpy_random_vectors():
    """SeedSequence states, raw PCG64 outputs and bounded int64 draws, as strings (uint64)."""
    seeds = [0, 1, 10007, 150105, 2**32 + 5, 2**62]
    out = {"seed_sequence": [], "pcg64": [], "integers": []}
    for s in seeds:
        st = np.random.SeedSequence(s).generate_state(4, np.uint64)
        out["seed_sequence"].append({"entropy": str(s), "state": [str(int(v)) for v in st]})
        raw = np.random.PCG64(s).random_raw(6)
        out["pcg64"].append({"seed": str(s), "raw": [str(int(v)) for v in raw]})
    # high values exercising each branch of numpy's bounded draw: rng = 0, 32-bit Lemire,
    # rng = 2^32 - 1, 64-bit Lemire, and a range where rejection is frequent.
    for s, low, high in [(3, 0, 1), (3, 0, 1000), (4, -50, 7), (5, 0, 2**32), (6, 0, 2**40 + 17),
                         (7, 0, 2**62 + 2**61), (8, -(2**62), 2**62)]:
        g = np.random.default_rng(s)
        v = g.integers(low, high, size=9, dtype=np.int64)
        out["integers"].append({"seed": s, "low": str(low), "high": str(high),
                                "values": [str(int(x)) for x in v]})
    return out


def main():
    rng = np.random.default_rng(20261129)
    cases = []

    spec = base_spec()
    toks = rng.integers(0, spec["compressed_vocab_size"], size=(3, 17)).tolist()
    cases.append(ReferenceHash(spec).case("demo_defaults", toks))

    flash = base_spec(engram_vocab_size=[16000000] * 3, max_ngram_size=4, n_embed_per_ngram=2048,
                      layer_ids=[1, 14], compressed_vocab_size=99092)
    toks = [[1000, 2000, 3000]] + [rng.integers(0, 99092, size=3).tolist()]
    cases.append(ReferenceHash(flash).case("deepseek_v41_flash", toks))

    spec = base_spec(engram_vocab_size=[1009, 2003, 517], max_ngram_size=4, n_head_per_ngram=3,
                     n_embed_per_ngram=384,
                     layer_ids=[0, 2, 5, 9], seed=12345, compressed_vocab_size=5000, pad_id=7)
    toks = rng.integers(0, 5000, size=(2, 11)).tolist()
    cases.append(ReferenceHash(spec).case("seed_12345_four_layers", toks))

    # A compression map folding 40 original ids onto 13 compressed ids, with negative ids
    # (which pass through the map unchanged) in the token stream.
    comp = [int(v) for v in rng.integers(0, 13, size=40)]
    spec = base_spec(engram_vocab_size=[97, 89], n_head_per_ngram=4, layer_ids=[3, 4],
                     compressed_vocab_size=13, pad_id=5, compression=comp, seed=7)
    toks = rng.integers(0, 40, size=(2, 9))
    toks[0, 3] = -1
    toks[1, 0] = -17
    toks[1, 6] = -3
    cases.append(ReferenceHash(spec).case("compressed_negative_ids", toks.tolist()))

    # A compressed vocabulary above 2^31 makes numpy draw the multipliers with its 32-bit
    # bounded method (half_bound < 2^32), a separate code path of Generator.integers.
    spec = base_spec(engram_vocab_size=[211, 307], n_head_per_ngram=2, layer_ids=[0, 6],
                     compressed_vocab_size=3000000000, seed=99)
    toks = rng.integers(0, 3000000000, size=(2, 5)).tolist()
    cases.append(ReferenceHash(spec).case("vocab_above_2_31_uses_32bit_draw", toks))

    json.dump({"generator": "tests/tools/gen_engram_vectors.py", "numpy": np.__version__,
               "numpy_random": numpy_random_vectors(), "cases": cases}, sys.stdout,
              separators=(",", ":"))
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
