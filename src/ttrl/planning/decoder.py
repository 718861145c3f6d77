"""Incremental decoding of the Trajectory Transformer for beam search, with a shared-prefix cache.

Beam search feeds the model one token per beam thousands of times per decision. The model's own
``forward(past_key_values=...)`` would concatenate (copy) each beam's whole cache for every token and
layer, and store the context part of the window once per beam although it is the same for all beams
of an environment. This decoder runs the model's own layers and weights with its own key/value
bookkeeping:

- keys/values of the window's prefix part (the executed context, identical for every beam of an
  environment) are stored once per environment; every beam's queries attend to them in one batched
  product per environment;
- each beam's own tokens (its plan) are stored per row in preallocated buffers written in place;
  repeats/reorders of beams gather only these rows, into a second buffer (ping-pong);
- value-token keys are never attended to by any query (the model's attention mask), so they are not
  stored at all; the only mask left is causality inside a multi-token chunk.

Logits equal the model's up to floating-point summation order (the planner built on this decoder is
tested against the plain algorithm in float64).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F


class CachedDecoder:
    """Keys/values of one window (positions counted from its start) for up to ``max_rows`` beams.

    Use: :meth:`reset` at a new window start, :meth:`feed` the prefix part once per environment
    (``[n_env, L]``) and :meth:`share` it, then :meth:`feed` each beam's tokens (``[rows, L]``,
    environment-major: rows of environment ``e`` are ``e * rows/n_env ...``), and
    :meth:`select_rows` when beams are repeated or reordered.
    """

    def __init__(self, model: Any, n_env: int, max_rows: int, max_window: int) -> None:
        config = model.config
        self.model = model
        self.n_bins, self.transition_dim = config.vocab_size, config.transition_dim
        self.n_head, self.head_dim = config.n_head, config.n_embd // config.n_head
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.n_env = n_env
        parameter = next(model.parameters())
        options = dict(dtype=parameter.dtype, device=parameter.device)
        self.layers = [_LayerWeights(block, self.scale) for block in model.blocks]
        n_layer = len(self.layers)
        own_shape = (2, n_layer, 2, max_rows, self.n_head, max_window, self.head_dim)
        # own[buffer, layer, key/value]: per-beam slots; rows live in own[self.current]
        self.own = torch.empty(own_shape, **options)
        self.shared = torch.empty(
            (n_layer, 2, n_env, self.n_head, max_window, self.head_dim), **options
        )
        self.current = 0
        self.reset()

    def refresh_weights(self) -> None:
        """Re-read the model's weights (they may have changed since the last plan)."""
        self.layers = [_LayerWeights(block, self.scale) for block in self.model.blocks]

    def reset(self) -> None:
        """Forget everything: the next token fed is at window position 0."""
        self.length = 0  # window position of the next token
        self.shared_slots = 0
        self.own_slots = 0
        self.rows = self.n_env

    def share(self) -> None:
        """Turn what was fed so far (one row per environment) into the shared prefix part."""
        slots = self.own_slots
        self.shared[:, :, :, :, :slots] = self.own[self.current, :, :, : self.n_env, :, :slots]
        self.shared_slots, self.own_slots = slots, 0

    def select_rows(self, rows: Tensor) -> None:
        """Repeat/reorder the beams: row ``i`` becomes old row ``rows[i]`` (same environment)."""
        slots, target, n = self.own_slots, 1 - self.current, rows.shape[0]
        if slots:
            torch.index_select(
                self.own[self.current, :, :, :, :, :slots],
                2,
                rows,
                out=self.own[target, :, :, :n, :, :slots],
            )
        self.current, self.rows = target, n

    def feed(self, tokens: Tensor, logits: bool = True) -> Tensor | None:
        """Run ``tokens [rows, L]`` at the next window positions; logits ``[rows, N+1]`` of the last.

        With ``logits=False`` only the keys/values are computed (the last layer stops after them).
        """
        rows, length = tokens.shape
        T, device = self.transition_dim, tokens.device
        first_position = self.length
        positions = torch.arange(first_position, first_position + length, device=device)
        dims = positions % T
        ids = torch.where(tokens == self.n_bins, self.n_bins * T, tokens + dims * self.n_bins)
        x = F.embedding(ids, self.model.tok_emb.weight) + self.model.pos_emb[0, positions]
        # Which new tokens get a key slot is known on the host: no device sync per token.
        offsets = [i for i in range(length) if (first_position + i) % T != T - 1]
        stored = torch.tensor(offsets, device=device) if len(offsets) < length else None
        first, last = self.own_slots, self.own_slots + len(offsets)
        visible = None
        if length > 1:  # causality inside the chunk: new slot j is seen by queries at or after it
            new_slots = positions if stored is None else positions.index_select(0, stored)
            visible = torch.cat(
                (
                    torch.ones(length, first, dtype=torch.bool, device=device),
                    new_slots[None, :] <= positions[:, None],
                ),
                dim=1,
            )
        self.rows = rows
        final = len(self.layers) - 1
        for layer, weights in enumerate(self.layers):
            # Only the last token's output is ever read: the last layer needs no other query.
            output = (
                "none" if layer == final and not logits else "last" if layer == final else "all"
            )
            x = self._layer(x, layer, weights, stored, first, last, visible, output)
        self.length += length
        self.own_slots = last
        if not logits:
            return None
        last_dim = (self.length - 1) % T
        return F.linear(self.model.ln_f(x[:, -1]), self.model.head.weight[last_dim])

    def _layer(
        self,
        x: Tensor,
        layer: int,
        weights: _LayerWeights,
        stored: Tensor | None,
        first: int,
        last: int,
        visible: Tensor | None,
        output: str,
    ) -> Tensor:
        """One block; ``output`` says for which tokens: "all", "last" or "none" (keys/values only)."""
        block = weights.block
        rows, length, _ = x.shape
        qkv = F.linear(block.ln1(x), weights.qkv_weight, weights.qkv_bias)
        qkv = qkv.view(rows, length, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)
        query, key, value = qkv.unbind(0)  # [rows, heads, length, head_dim]
        own_keys, own_values = self.own[self.current, layer, 0], self.own[self.current, layer, 1]
        if stored is None:  # no value token among the new ones
            own_keys[:rows, :, first:last] = key
            own_values[:rows, :, first:last] = value
        elif last > first:
            own_keys[:rows, :, first:last] = key.index_select(2, stored)
            own_values[:rows, :, first:last] = value.index_select(2, stored)
        if output == "none":
            return x
        if output == "last" and length > 1:  # the newest query sees every slot: no mask
            query, x, visible, length = query[:, :, -1:], x[:, -1:], None, 1
        scores = torch.matmul(query, own_keys[:rows, :, :last].transpose(-1, -2))
        shared = self.shared_slots
        if shared:
            shared_keys, shared_values = self.shared[layer, 0], self.shared[layer, 1]
            per_env = self._by_env(query)
            shared_scores = self._by_row(
                torch.matmul(per_env, shared_keys[:, :, :shared].transpose(-1, -2))
            )
            scores = torch.cat((shared_scores, scores), dim=-1)
        if visible is not None:
            scores[..., shared:].masked_fill_(~visible, float("-inf"))
        probs = scores.softmax(dim=-1)
        attended = torch.matmul(probs[..., shared:], own_values[:rows, :, :last])
        if shared:
            per_env = self._by_env(probs[..., :shared])
            attended = attended + self._by_row(torch.matmul(per_env, shared_values[:, :, :shared]))
        attended = attended.transpose(1, 2).reshape(rows, length, -1)
        x = x + block.attn.proj(attended)
        return x + block.l2(block.act(block.l1(block.ln2(x))))

    def _by_env(self, x: Tensor) -> Tensor:
        """``[rows, heads, L, k]`` -> ``[n_env, heads, rows_per_env * L, k]`` (one matmul per env)."""
        rows, heads, length, k = x.shape
        per_env = x.view(self.n_env, rows // self.n_env, heads, length, k).transpose(1, 2)
        return per_env.reshape(self.n_env, heads, -1, k)

    def _by_row(self, x: Tensor) -> Tensor:
        """Inverse of :meth:`_by_env`."""
        n_env, heads, _, k = x.shape
        per_row = x.view(n_env, heads, self.rows // n_env, -1, k).transpose(1, 2)
        return per_row.reshape(self.rows, heads, -1, k)


class _LayerWeights:
    """A block of the model plus its query/key/value weights fused into one matmul, the attention
    scale ``1/sqrt(head_dim)`` folded into the query part."""

    def __init__(self, block: Any, scale: float) -> None:
        attention = block.attn
        self.block = block
        self.qkv_weight = torch.cat(
            (attention.query.weight * scale, attention.key.weight, attention.value.weight)
        )
        self.qkv_bias = torch.cat(
            (attention.query.bias * scale, attention.key.bias, attention.value.bias)
        )
