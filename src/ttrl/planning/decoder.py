"""Incremental decoding of the Trajectory Transformer for beam search, with a shared-prefix cache.

Beam search feeds the model one token per beam thousands of times per decision. The model's own
``forward(past_key_values=...)`` would concatenate (copy) each beam's whole cache for every token and
layer, and store the context part of the window once per beam although it is the same for all beams
of an environment. This decoder is instead an attention cache that the model's own forward
(``TrajectoryTransformer.run``) accepts: the model computes embeddings, queries, keys, values, MLPs
and heads with its own layers, and the decoder only stores keys/values and runs the attention
products, with its own bookkeeping:

- keys/values of the window's prefix part (the executed context, identical for every beam of an
  environment) are stored once per environment; every beam's queries attend to them in one batched
  product per environment;
- each beam's own tokens (its plan) are stored per row in preallocated buffers written in place;
  reorders of beams gather only these rows, into a second buffer (ping-pong), and only when the
  next token needs them (a window slide discards the kept beams' keys/values before any is read);
- with the compiled kernel, a window rebuild keeps each distinct beam history once: every chunk
  it feeds (one transition of each distinct history) becomes a *history level* in a pool, and
  each row only records which run of each level is its own (:meth:`CachedDecoder.feed_distinct`).
  Beams that share earlier plans read the same keys/values, and reorders copy none of them;
- when each beam is expanded into ``n_expand`` candidates, the candidates keep reading their parent's
  keys/values (grouped per parent, one batched product) and only their new tokens are stored per
  candidate, until the best candidates are kept and become the new beams;
- value-token keys are never attended to by any query (the model's attention mask), so they are not
  stored at all, and a value token that ends a chunk fed without logits is not run; the only mask
  left is causality inside a multi-token chunk;
- a goal-conditioned model's goal is the first ``G`` window positions, fed with the window's prefix
  part and shared per environment like it; the window's crop never removes it.

On the CPU the attention (storing a chunk's keys/values and the products over the segments) is one
call of the compiled kernel of :mod:`ttrl.planning.cached_attention` per layer; elsewhere, or where
it cannot be built, it is the torch ops of :meth:`CachedDecoder.attend`. Both see the same buffers.

Logits equal the model's up to floating-point summation order (the planner built on this decoder is
tested against the plain algorithm in float64).
"""

from __future__ import annotations

import bisect
import math
from typing import Any

import torch
from torch import Tensor

from ttrl.errors import TtrlError
from ttrl.planning.cached_attention import kernel_for
from ttrl.threads import threads_for_call, threads_wait_passively, torch_threads


class CachedDecoder:
    """Keys/values of one window (positions counted from its start) for up to ``max_rows`` beams.

    Use: :meth:`reset` at a new window start, :meth:`feed` the prefix part once per environment
    (``[n_env, L]``; a goal model's goal tokens first) and :meth:`share` it, then :meth:`feed` each
    beam's tokens (``[rows, L]``, environment-major: rows of environment ``e`` are
    ``e * rows/n_env ...``), and :meth:`select_rows` when beams are repeated or reordered. A window
    rebuild feeds its distinct histories with :meth:`feed_distinct`.
    ``max_window`` counts trajectory tokens; the goal's ``G`` slots come on top.
    """

    def __init__(self, model: Any, n_env: int, max_rows: int, max_window: int) -> None:
        config = model.config
        self.model = model
        self.layout = config.layout
        self.transition_dim = self.layout.transition_dim
        self.n_head, self.head_dim = config.n_head, config.n_embd // config.n_head
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.n_env = n_env
        parameter = next(model.parameters())
        options = dict(dtype=parameter.dtype, device=parameter.device)
        n_layer = len(model.blocks)
        max_window += self.layout.prefix_length  # the goal's slots, never cropped
        own_shape = (2, n_layer, 2, max_rows, self.n_head, max_window, self.head_dim)
        # own[buffer, layer, key/value]: per-beam slots; rows live in own[self.current]
        self.own = torch.empty(own_shape, **options)
        self.shared = torch.empty(
            (n_layer, 2, n_env, self.n_head, max_window, self.head_dim), **options
        )
        # child[layer, key/value]: the tokens candidates add after an expand, per candidate
        self.child = torch.empty(
            (n_layer, 2, max_rows, self.n_head, self.transition_dim, self.head_dim), **options
        )
        self.current = 0
        # one compiled call per layer and chunk on the CPU (ttrl.planning.cached_attention)
        self.kernel = kernel_for(parameter.device, parameter.dtype)
        # small feeds on one thread while OpenMP threads sleep between ops (ttrl.threads)
        self.passive_threads = parameter.device.type == "cpu" and threads_wait_passively()
        self._kernel_buffers = self._whole_buffers(n_layer) if self.kernel is not None else None
        # the kernel's history levels (see feed_distinct): [layer, key/value, elements], grown on use
        self.pool = torch.empty((n_layer, 2, 0), **options)
        self.reset()

    def _whole_buffers(self, n_layer: int) -> list[list[list[tuple[Tensor, ...]]]]:
        """``[current][expanded][layer]``: the kernel's (own, shared, parent) key/value buffers,
        whole; it is told how many slots of each to read, so these views are made once."""
        return [
            [
                [
                    (
                        *(self.child[layer] if expanded else self.own[current, layer]).unbind(0),
                        *self.shared[layer].unbind(0),
                        *self.own[current, layer].unbind(0),
                    )
                    for layer in range(n_layer)
                ]
                for expanded in (False, True)
            ]
            for current in (0, 1)
        ]

    def reset(self) -> None:
        """Forget everything: the next token fed is at window position 0."""
        self.length = 0  # window position of the next token
        self.shared_slots = 0
        self.own_slots = 0
        self.rows = self.n_env
        self.children = 1  # candidates per beam since the last expand (1: not expanded)
        self.child_slots = 0
        self._pending: tuple | None = None  # a reorder not yet copied (see select_rows)
        # history levels (kernel only): offsets, lengths and group counts, each row's group per level
        self.levels: tuple[list[int], list[int], list[int]] = ([], [], [])
        self.row_groups: Tensor | None = None
        self.pool_used = 0
        self._to_level = False  # feed_distinct: the chunk being fed becomes a level
        self._level: tuple[int, int, int] | None = None  # where it goes: offset, groups, slots

    def share(self) -> None:
        """Turn what was fed so far (one row per environment) into the shared prefix part."""
        self._copy_pending()
        slots = self.own_slots
        self.shared[:, :, :, :, :slots] = self.own[self.current, :, :, : self.n_env, :, :slots]
        self.shared_slots, self.own_slots = slots, 0

    def expand(self, children: int) -> None:
        """Tile each environment's beams ``children`` times (like ``x.repeat(children, 1)`` per
        environment) without copying: candidates read their parent's keys/values."""
        self.children, self.child_slots = children, 0
        self.rows *= children

    def select_rows(self, rows: Tensor) -> None:
        """Keep/reorder rows: row ``i`` becomes old row ``rows[i]`` (same environment). After an
        expand, the kept candidates get their parent's keys/values plus their own new ones.

        The copy waits for the next feed: when the window slides first (a :meth:`reset`, as after
        every planning step once the window is full), the kept rows are rebuilt and never copied.
        """
        self._copy_pending()
        slots, target, n = self.own_slots, 1 - self.current, rows.shape[0]
        sources = rows
        if self.children > 1:
            per_env = self.rows // self.n_env
            parents_per_env = per_env // self.children
            sources = rows // per_env * parents_per_env + rows % parents_per_env
        if slots or self.child_slots:
            self._pending = (rows, sources, slots, self.child_slots, target)
        if self.row_groups is not None:  # a candidate's history is its parent's
            self.row_groups = self.row_groups.index_select(0, sources)
        self.own_slots += self.child_slots
        self.children, self.child_slots = 1, 0
        self.current, self.rows = target, n

    def _copy_pending(self) -> None:
        """Carry out the last :meth:`select_rows`: gather the kept rows into the other buffer."""
        if self._pending is None:
            return
        rows, sources, slots, child_slots, target = self._pending
        self._pending = None
        n = rows.shape[0]
        if slots:
            torch.index_select(
                self.own[1 - target, :, :, :, :, :slots],
                2,
                sources,
                out=self.own[target, :, :, :n, :, :slots],
            )
        if child_slots:
            torch.index_select(
                self.child[:, :, :, :, :child_slots],
                2,
                rows,
                out=self.own[target, :, :, :n, :, slots : slots + child_slots],
            )

    def feed(self, tokens: Tensor, logits: bool = True) -> Tensor | None:
        """Run ``tokens [rows, L]`` at the next window positions; logits ``[rows, N+1]`` of the last.

        The model runs its own blocks with this decoder as its attention cache; only the last
        token's output of the last layer is computed. With ``logits=False`` no head is applied, and
        a value token at the end is not run at all: no query reads its key and no logits are
        wanted from it, so it only takes its position. A small feed runs on one torch thread while
        idle threads wait passively (:func:`ttrl.threads.threads_for_call`).
        """
        with torch_threads(threads_for_call(tokens.numel(), self.passive_threads)):
            return self._feed(tokens, logits)

    def feed_distinct(self, tokens: Tensor, logits: bool = True) -> Tensor | None:
        """:meth:`feed` for a window rebuild, whose rows are distinct histories: with the compiled
        kernel, while no row has own slots, the chunk's keys/values become a history level, kept
        once per row and read in place by every row :meth:`select_rows` later maps to it (rows that
        share a history share its keys/values, and reorders copy none of them)."""
        if self.kernel is None or self.own_slots or self.children > 1:
            return self.feed(tokens, logits)
        self._to_level = True  # start_chunk places it
        try:
            return self.feed(tokens, logits)
        finally:
            self._to_level, self._level = False, None

    def _feed(self, tokens: Tensor, logits: bool) -> Tensor | None:
        self.rows = tokens.shape[0]
        if not logits and self.layout.is_value_position(self.length + tokens.shape[1] - 1):
            if tokens.shape[1] > 1:
                self.model.run(tokens[:, :-1], self, last_only=True)
            self.length += 1
            return None
        x, _, _ = self.model.run(tokens, self, last_only=True)
        if not logits:
            return None
        return self.model.head_logits(x, self.length - 1)[:, -1]

    # ---------------------------------------------------------------- the AttentionCache protocol
    def start_chunk(self, positions: Tensor) -> None:
        """Which new tokens get a key slot (not value tokens), and causality inside the chunk."""
        self._copy_pending()
        device, length = positions.device, positions.shape[0]
        # Value keys are never attended to, so they get no slot; known on the host: no device sync.
        value = self.layout.is_value_position
        offsets = [i for i in range(length) if not value(self.length + i)]
        first = self.child_slots if self.children > 1 else self.own_slots
        last = first + len(offsets)
        if self.kernel is not None:  # it takes the stored offsets and each query's own slots
            if self._to_level:  # a new history level: the chunk's slots, per row
                first, last = 0, len(offsets)
                self._level = self._place_level(last) if last else None
            self._stored_offsets = offsets
            self._own_visible = [first + bisect.bisect_right(offsets, i) for i in range(length)]
            self._chunk = (length, None, first, last, None)
            return
        stored = torch.tensor(offsets, device=device) if len(offsets) < length else None
        visible = None
        if length > 1:  # new slot j is seen by queries at or after it
            new_slots = positions if stored is None else positions.index_select(0, stored)
            visible = torch.cat(
                (
                    torch.ones(length, first, dtype=torch.bool, device=device),
                    new_slots[None, :] <= positions[:, None],
                ),
                dim=1,
            )
        self._chunk = (length, stored, first, last, visible)

    def end_chunk(self) -> None:
        length, _, _, last, _ = self._chunk
        self.length += length
        if self._level is not None:
            self._add_level(*self._level)
        elif self.children > 1:
            self.child_slots = last
        else:
            self.own_slots = last

    def attend(
        self,
        layer: int,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        need_weights: bool,
        dropout_p: float,
    ) -> tuple[Tensor, None]:
        """Store the new keys/values in the beam buffers and attend over the segments a row sees:
        its environment's prefix, its parent's plan (after an expand) and its own tokens."""
        if need_weights:
            raise TtrlError("the planner's cache returns no attention maps; use the model itself")
        if self.kernel is not None:
            return self._attend_compiled(layer, query, key, value), None
        length, stored, first, last, visible = self._chunk
        rows = key.shape[0]
        own_keys, own_values = self.own[self.current, layer, 0], self.own[self.current, layer, 1]
        expanded = self.children > 1
        # this row's own segment: the candidate's new tokens after an expand, else the beam's plan
        row_keys, row_values = (
            (self.child[layer, 0], self.child[layer, 1]) if expanded else (own_keys, own_values)
        )
        if stored is None:  # no value token among the new ones
            row_keys[:rows, :, first:last] = key
            row_values[:rows, :, first:last] = value
        elif last > first:
            row_keys[:rows, :, first:last] = key.index_select(2, stored)
            row_values[:rows, :, first:last] = value.index_select(2, stored)
        if query.shape[2] < length:  # the newest query alone sees every slot: no mask
            visible = None
        query = query * self.scale
        # Segments a query attends to: (keys, values, queries per group, groups per env) where
        # groups share keys: the environment's prefix, the parent's plan, then the row's own slots.
        segments = []
        if self.shared_slots:
            shared = self.shared[layer, :, :, :, : self.shared_slots]
            segments.append((shared[0], shared[1], rows // self.n_env, 1))
        if expanded and self.own_slots:
            parents = rows // self.children
            parent = self.own[self.current, layer, :, :parents, :, : self.own_slots]
            segments.append((parent[0], parent[1], self.children, parents // self.n_env))
        segments.append((row_keys[:rows, :, :last], row_values[:rows, :, :last], 1, rows))
        scores = torch.cat(
            [
                self._ungroup(torch.matmul(self._group(query, n, g), k.transpose(-1, -2)), n, g)
                for k, _, n, g in segments
            ],
            dim=-1,
        )
        if visible is not None:
            scores[..., scores.shape[-1] - last :].masked_fill_(~visible, float("-inf"))
        probs = scores.softmax(dim=-1)
        attended, begin = None, 0
        for keys, values, n, g in segments:
            part = probs[..., begin : begin + keys.shape[2]]
            begin += keys.shape[2]
            out = self._ungroup(torch.matmul(self._group(part, n, g), values), n, g)
            attended = out if attended is None else attended + out
        return attended, None

    def _place_level(self, slots: int) -> tuple[int, int, int]:
        """(offset, groups, slots) of a new level of ``slots`` slots for every current row, with
        room made in the pool (grown, keeping the levels already in it, when it is too small)."""
        size = self._level_size(self.rows, slots)
        if self.pool_used + size > self.pool.shape[2]:
            grown = torch.empty(
                (*self.pool.shape[:2], max(2 * self.pool.shape[2], self.pool_used + size)),
                dtype=self.pool.dtype,
                device=self.pool.device,
            )
            grown[:, :, : self.pool_used] = self.pool[:, :, : self.pool_used]
            self.pool = grown
        return self.pool_used, self.rows, slots

    def _level_size(self, groups: int, slots: int) -> int:
        """Pool elements of a level: ``[groups, heads, slots, head_dim]``."""
        return groups * self.n_head * slots * self.head_dim

    def _add_level(self, offset: int, groups: int, slots: int) -> None:
        """Record a fed level: each current row is its group."""
        offsets, lengths, counts = self.levels
        offsets.append(offset)
        lengths.append(slots)
        counts.append(groups)
        self.pool_used = offset + self._level_size(groups, slots)
        column = torch.arange(groups, device=self.pool.device)[:, None]
        self.row_groups = (
            column if self.row_groups is None else torch.cat((self.row_groups, column), dim=1)
        )

    def _attend_compiled(self, layer: int, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
        """:meth:`attend` as one call of the compiled kernel (same segments, same slots)."""
        expanded = self.children > 1
        own_k, own_v, shared_k, shared_v, parent_k, parent_v = self._kernel_buffers[self.current][
            expanded
        ][layer]
        offsets, lengths, counts = self.levels
        pool_k = pool_v = None  # the pool only when a level is read or written
        if offsets or self._level is not None:
            pool_k, pool_v = self.pool[layer]
        if self._level is not None:  # the chunk's keys/values go to its level
            offset, groups, slots = self._level
            shape = (groups, self.n_head, slots, self.head_dim)
            size = self._level_size(groups, slots)
            own_k = pool_k.narrow(0, offset, size).view(shape)
            own_v = pool_v.narrow(0, offset, size).view(shape)
        return self.kernel.attend(
            query,
            key,
            value,
            self._stored_offsets,
            self._chunk[2],  # the chunk's first own slot
            own_k,
            own_v,
            shared_k,
            shared_v,
            self.shared_slots,
            parent_k,
            parent_v,
            self.own_slots if expanded else 0,
            self.n_env,
            self.children,
            self._own_visible[-query.shape[2] :],
            self.scale,
            pool_k,
            pool_v,
            offsets,
            lengths,
            counts,
            self.row_groups,
        )

    def _group(self, x: Tensor, members: int, groups_per_env: int) -> Tensor:
        """``[rows, heads, L, k]`` -> ``[groups, heads, members * L, k]``: rows are laid out
        ``[env, member, group]``, so each group's rows share one key/value set (one matmul each)."""
        if members == 1:
            return x
        _, heads, length, k = x.shape
        grouped = x.view(self.n_env, members, groups_per_env, heads, length, k)
        return grouped.permute(0, 2, 3, 1, 4, 5).reshape(-1, heads, members * length, k)

    def _ungroup(self, x: Tensor, members: int, groups_per_env: int) -> Tensor:
        """Inverse of :meth:`_group`."""
        if members == 1:
            return x
        _, heads, _, k = x.shape
        rows = x.view(self.n_env, groups_per_env, heads, members, -1, k).permute(0, 3, 1, 2, 4, 5)
        return rows.reshape(self.n_env * members * groups_per_env, heads, -1, k)
