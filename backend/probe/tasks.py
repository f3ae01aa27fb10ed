"""Seeded synthetic probes that separate token mixers, and a tiny character LM.

Every task maps ``(seed, step, batch_size)`` to the same batch on every
machine and in every process: :meth:`Task.batch` draws from a
``torch.Generator`` seeded by ``(seed, step)`` only, so a data-parallel run
can build the global batch of a step and keep its own slice, and a resumed
run continues with the batches it would have seen. Held-out examples come
from a separate seed stream (:meth:`Task.heldout`; the text task uses the
last tenth of the text instead).

A batch is ``(inputs, targets)``, both ``(B, S)`` int64; ``targets`` is
``IGNORE`` (-100, ``F.cross_entropy``'s default ``ignore_index``) wherever
nothing is scored, and accuracy is argmax accuracy over the scored positions.
Token 0 is the blank / padding token of the synthetic tasks.

This file imports only torch and the standard library and names no layer
kind: the ``train`` export inlines it unchanged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

IGNORE = -100
_STEP_STRIDE = 1_000_003  # seeds (seed, step) -> one int; a prime keeps nearby seeds' streams apart
_HELDOUT = 2**40  # the held-out stream starts far from any training step


def _generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed((int(seed) * _STEP_STRIDE + int(step)) % 2**63)


def _distinct(gen: torch.Generator, b: int, n: int, k: int, offset: int = 0) -> torch.Tensor:
    """(b, k) int64: ``k`` distinct values from ``offset .. offset + n - 1`` per row."""
    return torch.rand(b, n, generator=gen).argsort(dim=1)[:, :k] + offset


@dataclass(frozen=True)
class Task:
    """Base: a name, a vocabulary, a sequence length and a batch sampler."""

    vocab_size: int
    seq_len: int

    name = "task"
    citation = ""

    def sample(self, gen: torch.Generator, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def batch(self, seed: int, step: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The training batch of ``step`` (the same for a seed everywhere)."""
        return self.sample(_generator(seed, step), batch_size)

    def heldout(self, seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` held-out examples (fresh random draws the training stream never produces at these seeds)."""
        return self.sample(_generator(seed, _HELDOUT), n)

    def describe(self) -> str:
        return f"{self.name}: vocab {self.vocab_size}, seq {self.seq_len}"


@dataclass(frozen=True)
class MQAR(Task):
    """Multi-query associative recall (Arora et al. 2023, "Zoology", arXiv 2312.04927, section 3.1).

    ``k1 v1 k2 v2 ... kN vN`` (keys distinct, from the lower half of the
    vocabulary; values from the upper half), then a query region of blanks in
    which every key appears once more, at a random even offset and in random
    order. The target at a query key's position is its value (next-token
    prediction, as in Zoology's ``multiquery_ar`` where the value slot of the
    query region is blank in the input and scored in the labels). Zoology
    draws the query gaps from a power law; here they are uniform over the
    slots, so every query is equally hard.
    """

    vocab_size: int = 64
    seq_len: int = 32
    num_pairs: int = 4

    name = "mqar"
    citation = "Arora et al. 2023, Zoology: Measuring and Improving Recall in Efficient Language Models, arXiv 2312.04927"

    def __post_init__(self) -> None:
        half = self.vocab_size // 2
        if self.num_pairs < 1 or self.num_pairs > half - 1 or self.num_pairs > self.vocab_size - half:
            raise ValueError(f"mqar: num_pairs must be 1..{half - 1} for vocab {self.vocab_size}, got {self.num_pairs}")
        if self.seq_len < 4 * self.num_pairs:
            raise ValueError(f"mqar: seq_len must be >= 4 * num_pairs = {4 * self.num_pairs}, got {self.seq_len}")

    def sample(self, gen: torch.Generator, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        n, s, half = self.num_pairs, self.seq_len, self.vocab_size // 2
        keys = _distinct(gen, b, half - 1, n, offset=1)  # (B, N) in 1 .. half-1
        values = torch.randint(half, self.vocab_size, (b, n), generator=gen)  # (B, N)
        x = torch.zeros(b, s, dtype=torch.long)
        y = torch.full((b, s), IGNORE, dtype=torch.long)
        x[:, 0:2 * n:2] = keys
        x[:, 1:2 * n:2] = values
        slots = (s - 2 * n) // 2  # query slots of two tokens: key, blank
        pick = _distinct(gen, b, slots, n)  # (B, N) distinct slots; query i goes to slot pick[:, i]
        pos = 2 * n + 2 * pick  # (B, N)
        x.scatter_(1, pos, keys)
        y.scatter_(1, pos, values)
        return x, y


@dataclass(frozen=True)
class SelectiveCopy(Task):
    """Selective copying (Gu & Dao 2023, "Mamba", arXiv 2312.00752, section 3.1 and appendix E.1).

    ``num_tokens`` data tokens at random positions of a context of blanks
    (length ``seq_len - num_tokens``), then ``num_tokens`` marker tokens; at
    the i-th marker the target is the i-th data token. Solving it needs
    content-aware selection: the spacing varies, so a fixed convolution or
    a time-invariant recurrence cannot. Tokens: 0 blank, 1 marker, data
    tokens ``2 .. vocab_size - 1``.
    """

    vocab_size: int = 16
    seq_len: int = 64
    num_tokens: int = 8

    name = "copy"
    citation = "Gu & Dao 2023, Mamba: Linear-Time Sequence Modeling with Selective State Spaces, arXiv 2312.00752"

    def __post_init__(self) -> None:
        if self.vocab_size < 3:
            raise ValueError(f"copy: vocab_size must be >= 3, got {self.vocab_size}")
        if not 1 <= self.num_tokens <= (self.seq_len - self.num_tokens):
            raise ValueError(f"copy: num_tokens must be 1..seq_len/2, got {self.num_tokens} for seq_len {self.seq_len}")

    def sample(self, gen: torch.Generator, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        m, s = self.num_tokens, self.seq_len
        ctx = s - m
        data = torch.randint(2, self.vocab_size, (b, m), generator=gen)  # (B, M)
        pos = _distinct(gen, b, ctx, m).sort(dim=1).values  # (B, M) increasing: the copy keeps their order
        x = torch.zeros(b, s, dtype=torch.long)
        x.scatter_(1, pos, data)
        x[:, ctx:] = 1
        y = torch.full((b, s), IGNORE, dtype=torch.long)
        y[:, ctx:] = data
        return x, y


@dataclass(frozen=True)
class Induction(Task):
    """Induction heads on repeated random tokens (Olsson et al. 2022, arXiv 2209.11895), at a random lag.

    The first ``seq_len - seq_len // 4`` tokens are distinct random tokens from ``2 .. vocab_size - 1``;
    the last quarter repeats a segment of them that starts at a random offset. Every position of the
    repeat but the last is scored on the next token: on a token seen before, predict the token that
    followed it -- find the earlier occurrence of the current token and copy its successor, the
    two-layer circuit (previous-token head, then an induction head) Olsson et al. describe. The lag
    differs per sequence, so a fixed shift (a convolution or spectral filter tap) cannot solve it, and
    the first part has no repeated token, so the answer is unambiguous. Nothing else is scored.
    """

    vocab_size: int = 64
    seq_len: int = 64

    name = "induction"
    citation = "Olsson et al. 2022, In-context Learning and Induction Heads, arXiv 2209.11895"

    @property
    def repeat_len(self) -> int:
        return max(2, self.seq_len // 4)

    def __post_init__(self) -> None:
        if self.vocab_size < 4 or self.seq_len < 6:
            raise ValueError(f"induction: vocab_size must be >= 4 and seq_len >= 6, got {self.vocab_size}, {self.seq_len}")
        first = self.seq_len - self.repeat_len
        if first > self.vocab_size - 2:
            raise ValueError(f"induction: the {first} distinct tokens before the repeat need vocab_size >= {first + 2}, "
                             f"got {self.vocab_size}")

    def sample(self, gen: torch.Generator, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        s, r = self.seq_len, self.repeat_len
        f = s - r
        first = torch.rand(b, self.vocab_size - 2, generator=gen).argsort(dim=1)[:, :f] + 2  # distinct tokens
        start = torch.randint(0, f - r + 1, (b, 1), generator=gen)  # where the repeated segment begins
        seg = first.gather(1, start + torch.arange(r))
        x = torch.cat([first, seg], dim=1)
        y = torch.full((b, s), IGNORE, dtype=torch.long)
        y[:, f:s - 1] = seg[:, 1:]  # on the repeat's token j, its successor in the first part
        return x, y


@dataclass(frozen=True)
class Text(Task):
    """Character-level language modelling on a small text (bytes as tokens, vocabulary 0..255 clipped to the text).

    Training windows are random slices of the first ``1 - heldout_fraction``
    of the text; held-out windows are evenly spaced slices of the rest. Every
    next character is scored.
    """

    data: bytes = b""
    vocab_size: int = 128
    seq_len: int = 64
    heldout_fraction: float = 0.1

    name = "text"
    citation = "character-level LM (Karpathy's char-rnn / nanoGPT shakespeare_char setting) on a public-domain text"

    def __post_init__(self) -> None:
        if self.data and max(self.data) >= self.vocab_size:
            raise ValueError(f"text: byte {max(self.data)} is outside the vocabulary of {self.vocab_size}")
        split = self.split
        if split < self.seq_len + 2 or len(self.data) - split < self.seq_len + 2:
            raise ValueError(f"text: {len(self.data)} bytes are too few for windows of {self.seq_len}")

    @property
    def split(self) -> int:
        return int(len(self.data) * (1 - self.heldout_fraction))

    def _windows(self, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        buf = torch.frombuffer(bytearray(self.data), dtype=torch.uint8).long()
        idx = starts[:, None] + torch.arange(self.seq_len + 1)  # (B, S + 1)
        w = buf[idx]
        return w[:, :-1].contiguous(), w[:, 1:].contiguous()

    def sample(self, gen: torch.Generator, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._windows(torch.randint(0, self.split - self.seq_len - 1, (b,), generator=gen))

    def heldout(self, seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = self.split, len(self.data) - self.seq_len - 1
        n = min(n, hi - lo + 1)
        starts = torch.linspace(lo, hi, n).long() if n > 1 else torch.tensor([lo])
        return self._windows(starts)

    def describe(self) -> str:
        return f"text: {len(self.data):,} bytes ({len(self.data) - self.split:,} held out), vocab {self.vocab_size}, seq {self.seq_len}"


SYNTHETIC: dict[str, type[Task]] = {"mqar": MQAR, "copy": SelectiveCopy, "induction": Induction}


def masked_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> tuple[int, int]:
    """(correct, scored) argmax predictions over positions whose target is not ``IGNORE``."""
    mask = targets != IGNORE
    pred = logits.argmax(dim=-1)
    return int((pred.eq(targets) & mask).sum()), int(mask.sum())


def chance_accuracy(task: Task) -> float:
    """Accuracy of uniform guessing over the answer alphabet (a floor for the result table)."""
    if isinstance(task, MQAR):
        return 1.0 / (task.vocab_size - task.vocab_size // 2)
    if isinstance(task, (SelectiveCopy, Induction)):
        return 1.0 / (task.vocab_size - 2)
    return 1.0 / max(1, len(set(task.data))) if isinstance(task, Text) else math.nan
