"""Decoding constraints: a token trie over allowed answers, and a token-id range.

``Trie`` semantics follow OFA/ModelScope's ``get_next_layer``: walking a prefix
from the root, the allowed next tokens are the children of the node reached;
a prefix that leaves the trie allows only EOS; a completed sequence (a leaf,
reached after its EOS) allows nothing.  Sequences are stored *without* the
leading BOS (OFA inserts ``[BOS] + answer + [EOS]`` and looks up
``[BOS] + generated``; the root here is the node after BOS).

For batched decoding the trie is compiled into tensors: every node has an id
(root = 0, "left the trie" = ``DEAD`` = -1), transitions are a sorted edge
table looked up with ``searchsorted``, and allowed-token masks are scattered
from a CSR child list, so one call handles all beams of all samples.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

# Special tokens 0..3 (<s>, <pad>, </s>, <unk>) stay allowed under a range
# constraint, as in OFA (`decoder_out[:, :, 4:start] = -inf; [:, :, end:] = -inf`).
NUM_SPECIAL_TOKENS = 4
# OFA's image-code tokens <code_0> .. <code_8191> (run_scripts/image_gen: --constraint-range=50265,58457)
OFA_CODE_RANGE = (50265, 58457)
# Location tokens <bin_0> .. <bin_999>
OFA_BIN_RANGE = (58457, 59457)

DEAD = -1


class Trie:
    """Prefix tree of allowed token sequences (each normally ending with EOS)."""

    def __init__(self, sequences: Iterable[Sequence[int]] = (), eos: int = 2) -> None:
        self.eos = int(eos)
        self._children: list[dict[int, int]] = [{}]  # node id -> {token: child id}
        self._num_sequences = 0
        self._compiled: dict[torch.device, tuple[Tensor, Tensor, Tensor, Tensor, int]] = {}
        for seq in sequences:
            self.insert(seq)

    # --- building --------------------------------------------------------
    def insert(self, sequence: Sequence[int]) -> None:
        if isinstance(sequence, Tensor):
            sequence = sequence.tolist()
        node = 0
        for token in sequence:
            token = int(token)
            child = self._children[node].get(token)
            if child is None:
                child = len(self._children)
                self._children.append({})
                self._children[node][token] = child
            node = child
        self._num_sequences += 1
        self._compiled.clear()

    @classmethod
    def from_sequences(cls, sequences: Iterable[Sequence[int]], eos: int = 2) -> Trie:
        return cls(sequences, eos=eos)

    @property
    def num_nodes(self) -> int:
        return len(self._children)

    def __len__(self) -> int:
        return self._num_sequences

    # --- python look-up (reference semantics) ------------------------------
    def next_tokens(self, prefix: Sequence[int]) -> list[int]:
        """Allowed next tokens after ``prefix`` (tokens generated after BOS)."""
        node = 0
        for token in prefix:
            node = self._children[node].get(int(token), DEAD)
            if node == DEAD:
                return [self.eos]
        return list(self._children[node].keys())

    def __contains__(self, sequence: Sequence[int]) -> bool:
        node = 0
        for token in sequence:
            node = self._children[node].get(int(token), DEAD)
            if node == DEAD:
                return False
        return not self._children[node]

    # --- tensor form -----------------------------------------------------
    def _tensors(self, device: torch.device):
        device = torch.device(device)
        if device not in self._compiled:
            parents, tokens, childs = [], [], []
            for node, children in enumerate(self._children):
                for token, child in sorted(children.items()):
                    parents.append(node)
                    tokens.append(token)
                    childs.append(child)
            key_base = (max(tokens) + 1) if tokens else 1
            parent_t = torch.tensor(parents, dtype=torch.long)
            token_t = torch.tensor(tokens, dtype=torch.long)
            child_t = torch.tensor(childs, dtype=torch.long)
            keys = parent_t * key_base + token_t  # sorted: parents ascending, tokens ascending
            counts = (
                torch.bincount(parent_t, minlength=self.num_nodes)
                if parents
                else torch.zeros(self.num_nodes, dtype=torch.long)
            )
            offsets = torch.zeros(self.num_nodes + 1, dtype=torch.long)
            offsets[1:] = counts.cumsum(0)
            self._compiled[device] = (
                keys.to(device),
                token_t.to(device),
                child_t.to(device),
                offsets.to(device),
                key_base,
            )
        return self._compiled[device]

    def token_ids(self, device: torch.device | str = "cpu") -> Tensor:
        """Sorted distinct tokens on any edge of the trie: the only columns ``allowed_mask`` can set."""
        return torch.unique(self._tensors(torch.device(device))[1])

    def root_states(self, n: int, device: torch.device | str = "cpu") -> Tensor:
        return torch.zeros(n, dtype=torch.long, device=device)

    def advance(self, states: Tensor, tokens: Tensor) -> Tensor:
        """Node ids after appending ``tokens`` (N,) to the prefixes at ``states`` (N,)."""
        keys, _, child, _, key_base = self._tensors(states.device)
        if keys.numel() == 0:
            return torch.full_like(states, DEAD)
        tokens = tokens.to(states.device).long()
        query = states.clamp(min=0) * key_base + tokens.clamp(0, key_base - 1)
        pos = torch.searchsorted(keys, query).clamp(max=keys.numel() - 1)
        found = (keys[pos] == query) & (states >= 0) & (tokens < key_base) & (tokens >= 0)
        return torch.where(found, child[pos], torch.full_like(states, DEAD))

    def states_for(self, sequences: Tensor, pad: int) -> Tensor:
        """Node ids before each position of right-padded ``sequences`` (N, L) → (N, L).

        Column ``i`` is the state after ``sequences[:, :i]``; columns past a
        sequence's end carry on walking pads (callers ignore them).
        """
        n, length = sequences.shape
        out = torch.empty(n, length, dtype=torch.long, device=sequences.device)
        state = self.root_states(n, sequences.device)
        for i in range(length):
            out[:, i] = state
            state = self.advance(state, sequences[:, i])
        return out

    def allowed_mask(self, states: Tensor, vocab_size: int) -> Tensor:
        """Bool mask (N, vocab_size): True where the token may follow the state."""
        _, token, _, offsets, _ = self._tensors(states.device)
        n = states.numel()
        flat = states.reshape(-1)
        mask = torch.zeros(n, vocab_size, dtype=torch.bool, device=states.device)
        live = flat >= 0
        mask[~live, self.eos] = True
        safe = flat.clamp(min=0)
        starts = offsets[safe]
        counts = torch.where(live, offsets[safe + 1] - starts, torch.zeros_like(starts))
        total = int(counts.sum())
        if total:
            rows = torch.repeat_interleave(torch.arange(n, device=states.device), counts)
            first = torch.repeat_interleave(starts - (counts.cumsum(0) - counts), counts)
            edge = first + torch.arange(total, device=states.device)
            mask[rows, token[edge]] = True
        return mask.view(*states.shape, vocab_size)


def apply_constraint_range(scores: Tensor, constraint_range: tuple[int, int] | None) -> Tensor:
    """In place: forbid every token outside [start, end) except the specials 0..3."""
    if constraint_range is not None:
        start, end = constraint_range
        scores[..., NUM_SPECIAL_TOKENS:start] = float("-inf")
        scores[..., end:] = float("-inf")
    return scores


def range_mask(vocab_size: int, constraint_range: tuple[int, int], device=None) -> Tensor:
    """Bool mask (vocab_size,) of tokens a range constraint allows."""
    start, end = constraint_range
    mask = torch.zeros(vocab_size, dtype=torch.bool, device=device)
    mask[:NUM_SPECIAL_TOKENS] = True
    mask[start:end] = True
    return mask
