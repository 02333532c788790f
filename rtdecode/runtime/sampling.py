"""The token grammar of a generated window and nucleus (top-p) sampling, in numpy.

One implementation for both generators, the PyTorch one (`rtdecode.training.generate`) and the runtime's
(`Decoder.generate`), so they cannot drift apart: they follow the same rules, and the same seed draws the same
tokens from the same logits. Torch-free, since the runtime serves without torch.

The grammar, for a window generated token by token:
* generation starts from SOS (ID and time offset);
* a sampled ID is a neuron or EOS, never SOS or PAD;
* a sampled time offset lies in the window and is never below the previous spike's (tokens are in time order);
* EOS ends the window: its later samples are dropped, and the next input it is fed is (EOS, time-offset EOS);
* with a count (`set_counts`, from a model's count head) the window holds exactly that many spikes: EOS is never
  sampled before the count is reached and is forced once it is. The count is drawn once, before the first spike,
  from Poisson(the head's expected count), so a window's size follows its context (the population rate) rather
  than whenever EOS happens to win a draw.
"""

from __future__ import annotations

import numpy as np

from rtdecode.data.tokenizer import Vocab

__all__ = ["WindowSampler", "nucleus", "sample"]


def nucleus(logits: np.ndarray, temperature: float, top_p: float) -> tuple[np.ndarray, np.ndarray]:
    """(B, V) logits -> (order, probs), each (B, V): token indices by falling probability at `temperature`, and
    their probabilities, zero outside the smallest set whose mass reaches `top_p` (the token that crosses it is
    kept, so the set is never empty), renormalised. The sort is stable, so ties keep vocabulary order."""
    z = logits / temperature
    z = z - z.max(-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(-1, keepdims=True)
    order = np.argsort(-p, axis=-1, kind="stable")
    sorted_p = np.take_along_axis(p, order, -1)
    keep = (np.cumsum(sorted_p, -1) - sorted_p) < top_p
    sorted_p = np.where(keep, sorted_p, 0.0)
    sorted_p /= sorted_p.sum(-1, keepdims=True)
    return order, sorted_p


def sample(logits: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator) -> np.ndarray:
    """(B, V) logits -> (B,) token indices: greedy at temperature 0, else one uniform draw per row from the
    nucleus (inverse CDF): a seeded `rng` draws the same tokens from the same logits whoever calls it."""
    if temperature <= 0:
        return logits.argmax(-1)
    order, p = nucleus(logits, temperature, top_p)
    u = rng.random((logits.shape[0], 1))
    choice = (np.cumsum(p, -1) < u).sum(-1)
    # the cumulative sum can end a rounding error below u: then take the last token with any probability, never
    # one of zero probability (a masked SOS or PAD would come out as a neuron index past the vocabulary)
    last = (p > 0).sum(-1) - 1
    return np.take_along_axis(order, np.minimum(choice, last)[:, None], -1)[:, 0]


class WindowSampler:
    """Generates B windows under the grammar: the caller runs the model, this class picks the tokens.

    Start from `first_tokens()`; after each model step hand `step` the last position's logits and feed the model
    the inputs it returns, until `finished` or the window's spike slots are full; `windows()` gives the result.
    """

    def __init__(
        self,
        vocab: Vocab,
        bins_per_window: int,
        batch: int,
        *,
        temperature: float = 1.0,
        top_p: float = 0.95,
        seed: int | None = None,
    ) -> None:
        self.vocab, self.temperature, self.top_p = vocab, temperature, top_p
        self.rng = np.random.default_rng(seed)  # one stream for IDs and time offsets, drawn in that order
        self.id_bias = np.full(vocab.id_size, -np.inf, np.float32)  # added to ID logits: 0 = may be sampled
        self.id_bias[: vocab.n_neurons] = 0.0
        self.id_bias[vocab.id_eos] = 0.0
        self._dt_index = np.arange(vocab.dt_size)
        self._bins = bins_per_window
        self.last_dt = np.zeros(batch, np.int64)
        self.done = np.zeros(batch, bool)
        self.emitted = np.zeros(batch, np.int64)  # spikes recorded per window so far
        self.target: np.ndarray | None = None  # (B,) spikes each window must hold (`set_counts`); None = up to EOS
        self._ids: list[list[int]] = [[] for _ in range(batch)]
        self._dts: list[list[int]] = [[] for _ in range(batch)]

    def first_tokens(self) -> tuple[np.ndarray, np.ndarray]:
        """The first inputs (ids, dts), each (B, 1): SOS."""
        B = self.done.size
        return np.full((B, 1), self.vocab.id_sos, np.int64), np.full((B, 1), self.vocab.dt_sos, np.int64)

    def set_counts(self, log_rate: np.ndarray, limit: int) -> np.ndarray:
        """Fix each window's spike count before its first spike, from (B,) log expected counts: a Poisson draw
        (the nearest integer at temperature 0), at most `limit` (the window's spike slots). Returns the counts."""
        rate = np.exp(np.clip(np.asarray(log_rate, np.float64).reshape(-1), -30.0, 30.0))
        n = np.rint(rate) if self.temperature <= 0 else self.rng.poisson(rate)
        self.target = np.minimum(n, limit).astype(np.int64)
        return self.target

    def dt_allowed(self) -> np.ndarray:
        """(B, dt_size) bool: the time offsets each window's next spike may take."""
        return (self._dt_index[None, :] >= self.last_dt[:, None]) & (self._dt_index[None, :] < self._bins)

    def step(self, id_logits: np.ndarray, dt_logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Next-ID (B, id_size) and next-time-offset (B, dt_size) logits -> the next inputs (ids, dts), each (B, 1).

        Records each unfinished window's sampled spike; a window that samples EOS (or, with counts, has its count
        of spikes) is finished."""
        id_bias: np.ndarray = self.id_bias
        if self.target is not None:
            id_bias = np.repeat(self.id_bias[None, :], id_logits.shape[0], 0)
            id_bias[self.emitted < self.target, self.vocab.id_eos] = -np.inf
        next_id = sample(id_logits + id_bias, self.temperature, self.top_p, self.rng)
        next_dt = sample(np.where(self.dt_allowed(), dt_logits, -np.inf), self.temperature, self.top_p, self.rng)
        if self.target is not None:
            next_id = np.where(self.emitted >= self.target, self.vocab.id_eos, next_id)
        is_eos = next_id == self.vocab.id_eos
        for b in np.flatnonzero(~self.done & ~is_eos):
            self._ids[b].append(int(next_id[b]))
            self._dts[b].append(int(next_dt[b]))
            self.emitted[b] += 1
        self.done |= is_eos
        self.last_dt = np.where(self.done, self.last_dt, next_dt)
        return next_id[:, None], np.where(is_eos, self.vocab.dt_eos, next_dt)[:, None]

    @property
    def finished(self) -> bool:
        """Whether every window has sampled EOS."""
        return bool(self.done.all())

    def windows(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per window (neuron indices, time offsets in dt quanta), in token order."""
        return [np.array(x, np.int64) for x in self._ids], [np.array(x, np.int64) for x in self._dts]
