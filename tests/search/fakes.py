"""A tiny stand-in for the grammar's architecture distribution (hnas.sampling implements the
real one): architectures are space-separated words over a small alphabet, one per position,
with a per-position categorical prior (default weight 4 against 1, as a medium confidence)."""

from __future__ import annotations

import hashlib
import math

from hnas.errors import InvalidArchitecture

DEFAULT_WEIGHT = 4.0


class WordArchitecture:
    def __init__(self, alphabet: tuple[str, ...] = ("a", "b", "c"), default: str = "a b a"):
        self.alphabet = alphabet
        self.default = default
        self.length = len(default.split())
        self.identity = hashlib.sha256(f"{alphabet}|{default}".encode()).hexdigest()[:16]

    def _probabilities(self, mode: str) -> list[dict[str, float]]:
        total = DEFAULT_WEIGHT + len(self.alphabet) - 1
        return [{w: (DEFAULT_WEIGHT if w == m else 1.0) / total for w in self.alphabet}
                for m in mode.split()]

    def sample(self, rng, *, uniform=False, centered_on=None):
        if uniform:
            return " ".join(self.alphabet[int(rng.integers(len(self.alphabet)))]
                            for _ in range(self.length))
        words = []
        for probs in self._probabilities(centered_on or self.default):
            words.append(self.alphabet[int(rng.choice(len(self.alphabet),
                                                      p=[probs[w] for w in self.alphabet]))])
        return " ".join(words)

    def mutate(self, architecture, rng):
        words = architecture.split()
        position = int(rng.integers(len(words)))
        others = [w for w in self.alphabet if w != words[position]]
        words[position] = others[int(rng.integers(len(others)))]
        return " ".join(words)

    def crossover(self, a, b, rng):
        cut = int(rng.integers(1, self.length))
        return " ".join(a.split()[:cut] + b.split()[cut:])

    def log_prob(self, architecture, *, uniform=False, centered_on=None):
        if uniform:
            return -len(architecture.split()) * math.log(len(self.alphabet))
        probs = self._probabilities(centered_on or self.default)
        return sum(math.log(p[w]) for p, w in zip(probs, architecture.split()))

    def validate(self, architecture):
        words = architecture.split()
        for position, word in enumerate(words):
            if word not in self.alphabet:
                raise InvalidArchitecture(f"unexpected token {word!r} at position {position}; "
                                          f"expected one of {self.alphabet}", token=word,
                                          position=position, expected=self.alphabet)
        if len(words) != self.length:
            raise InvalidArchitecture(f"expected {self.length} tokens, got {len(words)}")
