"""The Trajectory Transformer: a pre-LayerNorm GPT over discretised transitions.

A transition ``[s, a, r, V]`` is ``T`` tokens, each dimension discretised into ``N`` bins. The token at
absolute position ``p`` is embedded at row ``id + (p mod T) * N`` (the stop token ``N`` at row ``N*T``),
predicted by the head of dimension ``p mod T``, and no query ever attends to a value-token key. With a
key/value cache these position-dependent parts continue at the cached length, so cached decoding gives
the same logits as running the whole sequence at once.

**Goal-conditioned model** (``config.goal_dim = G > 0``; the released code's ``ConditionalGPT``, as
one model). The sequence is the goal's ``G`` tokens (the discretised goal, one token per goal dim,
bins ``0 .. N-1``), then the trajectory; every position, dim, mask and loss weight comes from
:class:`~ttrl.layout.TransitionLayout` with ``prefix_length = G``:

- goal token ``i`` is embedded at row ``id + i * N`` of its own table ``goal_emb`` and gets no
  position embedding; trajectory tokens sit at positions ``G, G+1, ...`` (their dim is
  ``(p - G) mod T``, their position embedding ``pos_emb[p]``: rows ``0 .. G-1`` of ``pos_emb``
  belong to the goal's positions and are never read);
- attention: goal tokens are causal among themselves and every trajectory token sees the whole goal;
  the value-key mask hides trajectory value tokens only, at positions ``G + T - 1 + kT`` (the
  released code's mask ``T-1::T`` forgets the offset);
- :meth:`TrajectoryTransformer.forward` takes the goal as ``goals=[B, G]`` tokens beside the
  trajectory tokens and returns logits of the trajectory tokens only (goal outputs are dropped), so
  ``targets``, the loss mask and the logits line up exactly as without a goal and the loss covers
  the trajectory only. The goal is fed with the first chunk; a cache then holds it, so later chunks
  pass no goal. Internally (:meth:`TrajectoryTransformer.run`, the attention caches) the goal is
  simply the first ``G`` positions of the sequence.

Parameter names follow the HuggingFace ``TrajectoryTransformerModel``, so state dicts map one to one,
and so does ``forward``: its arguments, ``output_hidden_states`` / ``output_attentions`` and the tuple
that ``return_dict=False`` gives have HF's meaning and order. Attention is
``scaled_dot_product_attention`` with that boolean mask; only when attention maps are asked for does
it take the explicit softmax, which can return them.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor, nn

from ttrl.errors import TtrlError
from ttrl.layout import ACTION, KIND_NAMES, OBSERVATION, REWARD, VALUE
from ttrl.model import cpu_ops
from ttrl.model.config import TrajectoryTransformerConfig

# One (key, value) pair per layer, each [B, n_head, L_past, n_embd // n_head].
PastKeyValues = tuple[tuple[Tensor, Tensor], ...]


@dataclass
class TrajectoryTransformerOutput:
    """What :meth:`TrajectoryTransformer.forward` returns; also indexable like a tuple of its set fields."""

    loss: Tensor | None = None  # scalar weighted cross-entropy, when targets were given
    logits: Tensor | None = None  # [B, L, vocab_size + 1]
    past_key_values: PastKeyValues | None = None  # when use_cache=True
    # output_hidden_states: the embeddings and every block's output (the last before ln_f), as HF
    hidden_states: tuple[Tensor, ...] | None = None  # n_layer + 1 of [B, L, n_embd]
    attentions: tuple[Tensor, ...] | None = None  # output_attentions: n_layer of [B, h, L, L_all]

    def to_tuple(self) -> tuple[Any, ...]:
        """The fields that are set, in HF's order (loss, logits, past, hidden states, attentions)."""
        fields = (self.loss, self.logits, self.past_key_values, self.hidden_states, self.attentions)
        return tuple(v for v in fields if v is not None)

    def __getitem__(self, key: int | slice | str) -> Any:
        if isinstance(key, str):
            return getattr(self, key)
        return self.to_tuple()[key]


def past_length(past_key_values: PastKeyValues | None) -> int:
    """Number of tokens a cache holds (0 for no cache)."""
    return 0 if past_key_values is None else past_key_values[0][0].shape[2]


def reorder_cache(past_key_values: PastKeyValues, index: Tensor) -> PastKeyValues:
    """Select (and repeat or reorder) cache rows along the batch, e.g. to follow the surviving beams."""
    return tuple(
        (key.index_select(0, index), value.index_select(0, index)) for key, value in past_key_values
    )


class AttentionCache(Protocol):
    """Where a forward's keys and values go, and how its queries attend over them.

    The model computes queries, keys and values and runs everything else (embeddings, blocks,
    heads); a cache only stores keys/values and runs the attention product. Two kinds exist:
    :class:`PastKeyValuesCache` (transformers' ``past_key_values`` tuple, and plain training) and the
    planner's shared-prefix beam cache (:class:`ttrl.planning.decoder.CachedDecoder`).
    """

    @property
    def length(self) -> int:
        """Positions already held: the position of the next token fed."""
        ...

    def start_chunk(self, positions: Tensor) -> None:
        """A forward of the tokens at ``positions`` begins."""
        ...

    def attend(
        self,
        layer: int,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        need_weights: bool,
        dropout_p: float,
    ) -> tuple[Tensor, Tensor | None]:
        """Store layer ``layer``'s new ``key``/``value`` ``[B, h, L, d/h]`` and attend ``query``
        ``[B, h, Lq, d/h]`` (the last ``Lq`` of the new tokens) over all it may see; returns the
        attended values ``[B, h, Lq, d/h]`` and, with ``need_weights``, the attention map."""
        ...

    def end_chunk(self) -> None:
        """The forward has run every layer."""
        ...


class PastKeyValuesCache:
    """transformers' cache: per layer ``(key, value)`` tensors, concatenated with each new chunk.

    ``past=None`` starts empty; ``keep=False`` (plain training) stores nothing. Attention goes through
    ``scaled_dot_product_attention`` with the model's mask, or the explicit softmax when maps are
    asked for.
    """

    def __init__(self, allowed: Tensor, past: PastKeyValues | None, keep: bool) -> None:
        self.allowed_table = allowed
        self.past = past
        self.keep = keep
        self.presents: list[tuple[Tensor, Tensor]] = []
        self._length = past_length(past)
        self._allowed: Tensor | None = None

    @property
    def length(self) -> int:
        return self._length

    def start_chunk(self, positions: Tensor) -> None:
        end = self._length + positions.shape[0]
        self._allowed = self.allowed_table[self._length : end, :end]

    def attend(
        self,
        layer: int,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        need_weights: bool,
        dropout_p: float,
    ) -> tuple[Tensor, Tensor | None]:
        if self.past is not None:
            key = torch.cat((self.past[layer][0], key), dim=2)
            value = torch.cat((self.past[layer][1], value), dim=2)
        if self.keep:
            self.presents.append((key, value))
        allowed = self._allowed[-query.shape[2] :]
        if not need_weights:
            y = F.scaled_dot_product_attention(
                query, key, value, attn_mask=allowed, dropout_p=dropout_p
            )
            return y, None
        scores = (query @ key.transpose(-2, -1)) / math.sqrt(key.shape[-1])
        weights = F.dropout(
            scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1), dropout_p, dropout_p > 0
        )
        return weights @ value, weights

    def end_chunk(self) -> None:
        self._length += 0 if self._allowed is None else self._allowed.shape[0]

    def past_key_values(self) -> PastKeyValues:
        """The cache in transformers' layout, for the next call."""
        return tuple(self.presents)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention; which (query, key) pairs are allowed is the cache's business."""

    def __init__(self, config: TrajectoryTransformerConfig) -> None:
        super().__init__()
        d = config.n_embd
        self.key = nn.Linear(d, d)
        self.query = nn.Linear(d, d)
        self.value = nn.Linear(d, d)
        self.proj = nn.Linear(d, d)
        self.resid_drop = nn.Dropout(config.resid_pdrop)
        self.attn_pdrop = config.attn_pdrop
        self.n_head = config.n_head
        self._fused: tuple[tuple, Tensor, Tensor] | None = None

    def fused_qkv(self) -> tuple[Tensor, Tensor]:
        """q, k and v weights as one matrix (one matmul); the layers stay separate in the state dict.

        Without gradients (decoding, planning) the concatenation is kept until a weight changes.
        """
        parts = (self.query, self.key, self.value)
        if torch.is_grad_enabled():
            return (
                torch.cat([p.weight for p in parts]),
                torch.cat([p.bias for p in parts]),
            )
        q, k, v = parts
        key = (
            q.weight._version, k.weight._version, v.weight._version,
            q.bias._version, k.bias._version, v.bias._version,
            q.weight.data_ptr(), torch.is_inference_mode_enabled(),
        )  # fmt: skip
        if self._fused is None or self._fused[0] != key:
            weight = torch.cat([p.weight for p in parts])
            bias = torch.cat([p.bias for p in parts])
            self._fused = (key, weight, bias)
        return self._fused[1], self._fused[2]

    def forward(
        self,
        x: Tensor,
        cache: AttentionCache,
        layer: int,
        need_weights: bool = False,
        last_only: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Attended values (of the last token only with ``last_only``) and the map if asked."""
        batch, length, d = x.shape
        weight, bias = self.fused_qkv()
        ops = cpu_ops.ops_for(x)  # compiled layers for CPU inference (ttrl.model.cpu_ops)
        qkv = cpu_ops.linear(x, weight, bias, self.__dict__, ops)
        qkv = qkv.view(batch, length, 3, self.n_head, d // self.n_head)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, h, L, d/h]
        if last_only:
            query = query[:, :, -1:]
        dropout_p = self.attn_pdrop if self.training else 0.0
        y, weights = cache.attend(layer, query, key, value, need_weights, dropout_p)
        y = y.transpose(1, 2).reshape(batch, query.shape[2], d)
        y = cpu_ops.apply(self.proj, y, ops)
        return (self.resid_drop(y) if self.training else y), weights


class Block(nn.Module):
    """Pre-LayerNorm transformer block: ``x + attn(ln1(x))``, then ``x + mlp(ln2(x))``."""

    def __init__(self, config: TrajectoryTransformerConfig) -> None:
        super().__init__()
        d = config.n_embd
        self.ln1 = nn.LayerNorm(d)
        self.ln2 = nn.LayerNorm(d)
        self.attn = CausalSelfAttention(config)
        self.l1 = nn.Linear(d, 4 * d)
        self.act = nn.GELU()
        self.l2 = nn.Linear(4 * d, d)
        self.drop = nn.Dropout(config.resid_pdrop)

    def forward(
        self,
        x: Tensor,
        cache: AttentionCache,
        layer: int,
        need_weights: bool = False,
        last_only: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """The block's output (the last token's only with ``last_only``) and the attention map."""
        ops = cpu_ops.ops_for(x)  # compiled layers for CPU inference (ttrl.model.cpu_ops)
        attended, weights = self.attn(
            cpu_ops.apply(self.ln1, x, ops), cache, layer, need_weights, last_only
        )
        if last_only:
            x = x[:, -1:]
        x = x + attended
        h = cpu_ops.apply(self.l1, cpu_ops.apply(self.ln2, x, ops), ops)
        mlp = cpu_ops.apply(self.l2, cpu_ops.apply(self.act, h, ops), ops)
        # dropout is the identity in eval mode; skipping the module call matters when decoding
        return x + (self.drop(mlp) if self.training else mlp), weights


class DimensionHeads(nn.Module):
    """One bias-free linear head per transition dimension; position ``p`` uses head ``p mod T``."""

    def __init__(self, config: TrajectoryTransformerConfig) -> None:
        super().__init__()
        self.weight = nn.Parameter(
            torch.empty(config.transition_dim, config.vocab_size + 1, config.n_embd)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for weight in self.weight.data:
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5))

    def forward(self, x: Tensor, first_dim: int) -> Tensor:
        """Logits ``[B, L, N+1]`` for hidden states ``x [B, L, d]`` of consecutive trajectory tokens,
        the first of transition dim ``first_dim`` (the layout's dim of its position)."""
        batch, length, d = x.shape
        n_dims = self.weight.shape[0]
        if length == 1:  # the decoding step: a single head
            return F.linear(x, self.weight[first_dim])
        # Pad to whole transitions so every head sees one row per transition: [T, B*K, d] @ [T, d, N+1].
        front = first_dim
        back = -(front + length) % n_dims
        padded = F.pad(x, (0, 0, front, back))
        per_dim = padded.view(-1, n_dims, d).transpose(0, 1)
        logits = torch.bmm(per_dim, self.weight.transpose(1, 2)).transpose(0, 1)
        return logits.reshape(batch, -1, self.weight.shape[1])[:, front : front + length]


class TrajectoryTransformer(nn.Module):
    """GPT over discretised trajectories with per-dimension embeddings and heads.

    Example::

        model = TrajectoryTransformer(TrajectoryTransformerConfig(observation_dim=11, action_dim=3,
                                                                  transition_dim=16, block_size=159))
        out = model(tokens, targets=targets, attention_mask=loss_mask)   # out.loss, out.logits
        step = model(first_tokens, use_cache=True)                       # then feed one token at a time:
        step = model(next_token, past_key_values=step.past_key_values, use_cache=True)

    A goal-conditioned model (``goal_dim = G``) takes the goal with the first chunk::

        out = model(tokens, goals=goal_tokens, targets=targets, attention_mask=loss_mask)
        step = model(first_tokens, goals=goal_tokens, use_cache=True)     # the cache holds the goal
        step = model(next_token, past_key_values=step.past_key_values, use_cache=True)
    """

    main_input_name = "trajectories"  # as transformers' TrajectoryTransformerModel
    supports_gradient_checkpointing = True

    def __init__(self, config: TrajectoryTransformerConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.gradient_checkpointing = False
        n_bins, n_dims, block = config.vocab_size, config.transition_dim, config.block_size
        self.tok_emb = nn.Embedding(n_bins * n_dims + 1, config.n_embd)
        self.pos_emb = nn.Parameter(torch.zeros(1, block, config.n_embd))
        self.drop = nn.Dropout(config.embd_pdrop)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.head = DimensionHeads(config)
        self._register_position_tables()
        self.apply(self._init_weights)
        # Created and initialised last, so that the other weights of a goal model start as those
        # of a plain model from the same seed; a model without a goal has no such table.
        if config.goal_dim:
            self.goal_emb = nn.Embedding(n_bins * config.goal_dim, config.n_embd)
            self._init_weights(self.goal_emb)

    def _register_position_tables(self) -> None:
        """Position-dependent constants, built once; forward slices them at the absolute positions."""
        config = self.config
        layout = config.layout
        positions = torch.arange(config.block_size)
        dims = layout.dims(positions)
        # Row block of each position's embedding table: its transition dim, or in the goal (dim -1)
        # its goal dim, which is its position.
        table_dims = torch.where(dims >= 0, dims, positions)
        self.register_buffer("token_offsets", table_dims * config.vocab_size, persistent=False)
        # allowed[q, k]: causal, and value-token keys are hidden from every query (itself included);
        # the goal's keys are never value keys, so every later token sees the whole goal.
        self.register_buffer("allowed", layout.attention_mask(config.block_size), persistent=False)
        # Weight of the target at position p, i.e. of the token at p + 1; goal targets weigh 0.
        kind_weights = torch.zeros(len(KIND_NAMES))
        kind_weights[OBSERVATION] = 1.0
        kind_weights[ACTION] = config.action_weight
        kind_weights[REWARD] = config.reward_weight
        kind_weights[VALUE] = config.value_weight
        self.register_buffer(
            "loss_weights", kind_weights[layout.kinds(positions + 1)], persistent=False
        )

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    # Sizes, for callers that hold only the model.
    @property
    def transition_dim(self) -> int:
        return self.config.transition_dim

    @property
    def observation_dim(self) -> int:
        return self.config.observation_dim

    @property
    def action_dim(self) -> int:
        return self.config.action_dim

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def block_size(self) -> int:
        return self.config.block_size

    @property
    def stop_token(self) -> int:
        return self.config.stop_token

    @property
    def goal_dim(self) -> int:
        """Goal tokens before every sequence (0: not goal-conditioned)."""
        return self.config.goal_dim

    def num_parameters(self) -> int:
        """Number of parameters."""
        return sum(p.numel() for p in self.parameters())

    def gradient_checkpointing_enable(self) -> None:
        """Recompute each block's activations in the backward pass (less memory, more compute).

        Applies in training mode only; the results and gradients are those of a plain forward
        (dropout's RNG state is replayed). As in transformers, no cache is returned meanwhile.
        """
        self.gradient_checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        """Keep activations for the backward pass again (the default)."""
        self.gradient_checkpointing = False

    def forward(
        self,
        trajectories: Tensor,
        past_key_values: PastKeyValues | None = None,
        targets: Tensor | None = None,
        attention_mask: Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        goals: Tensor | None = None,
    ) -> TrajectoryTransformerOutput | tuple[Any, ...]:
        """Logits (and the loss) for token ids ``trajectories [B, L]``; HF's signature and outputs.

        Args:
            trajectories: bin ids in ``[0, N]`` (``N`` = stop token), starting at position
                ``past_length(past_key_values)`` of a sequence that starts at a transition boundary
                (after the goal, for a goal-conditioned model).
            past_key_values: the cache returned by an earlier call with ``use_cache=True`` (for a
                goal model it holds the goal: its length counts the ``G`` goal tokens).
            targets: ``[B, L]`` next-token ids; when given, the loss is computed.
            attention_mask: the LOSS mask ``[B, L]`` or ``[B, L, 1]`` (1 = counts); attention itself is
                never masked beyond causality and the value tokens. None = all positions count.
            use_cache: return the cache extended by these tokens (None = False).
            output_attentions: return every layer's attention map (the explicit softmax path).
            output_hidden_states: return the embeddings and every block's output.
            return_dict: False returns the tuple of set fields ``(loss, logits, past_key_values,
                hidden_states, attentions)``, as transformers does (None = True).
            goals: ``[B, G]`` goal tokens (bins of the goal discretiser), required by a
                goal-conditioned model with the first chunk (no cache yet) and refused otherwise.
                Logits, loss and targets cover ``trajectories`` only; ``hidden_states`` and
                ``attentions`` cover every fed token, the goal's first.

        Raises:
            TtrlError: a goal missing, of the wrong shape or dtype, or given where none is taken.
        """
        if past_key_values is not None and not isinstance(past_key_values, (tuple, list)):
            raise TtrlError(
                "the second positional argument of forward is past_key_values (as in transformers); "
                "pass the targets by keyword: model(trajectories, targets=...)"
            )
        checkpointing = self.gradient_checkpointing and self.training
        use_cache = bool(use_cache) and not checkpointing
        start = past_length(past_key_values)
        sequence = self._with_goal(trajectories, goals, start)
        fed_goal = sequence.shape[1] - trajectories.shape[1]
        cache = PastKeyValuesCache(self.allowed, past_key_values, keep=use_cache)
        out = self.run(sequence, cache, bool(output_attentions), bool(output_hidden_states))
        x, hidden, maps = out
        start += fed_goal  # the first trajectory token's position
        logits = self.head_logits(x[:, fed_goal:] if fed_goal else x, start)
        loss = (
            None if targets is None else self._weighted_loss(logits, targets, attention_mask, start)
        )
        output = TrajectoryTransformerOutput(
            loss=loss,
            logits=logits,
            past_key_values=cache.past_key_values() if use_cache else None,
            hidden_states=hidden,
            attentions=maps,
        )
        return output if return_dict is None or return_dict else output.to_tuple()

    def _with_goal(self, trajectories: Tensor, goals: Tensor | None, start: int) -> Tensor:
        """The tokens to feed: the goal then ``trajectories`` when the sequence starts here."""
        goal_dim = self.config.goal_dim
        if not goal_dim:
            if goals is not None:
                raise TtrlError(
                    "this model has goal_dim=0 and takes no goals; pass goals=... only to a "
                    "goal-conditioned model (model.goal_dim > 0)"
                )
            return trajectories
        if start >= goal_dim:  # the cache holds the goal already
            if goals is not None:
                raise TtrlError(
                    f"past_key_values already holds the goal ({start} cached tokens); pass goals=... "
                    f"only with the first chunk"
                )
            return trajectories
        if start:
            raise TtrlError(
                f"past_key_values holds {start} tokens, part of the goal's {goal_dim}; start the "
                f"cache with model(first_tokens, goals=goals, use_cache=True)"
            )
        if goals is None:
            raise TtrlError(
                f"a goal-conditioned model needs goals=... : [batch, goal_dim] = "
                f"[{trajectories.shape[0]}, {goal_dim}] goal tokens (the goal discretizer's bins)"
            )
        if tuple(goals.shape) != (trajectories.shape[0], goal_dim) or goals.is_floating_point():
            raise TtrlError(
                f"goals must be integer tokens of shape [batch, goal_dim] = "
                f"[{trajectories.shape[0]}, {goal_dim}], got {goals.dtype} {list(goals.shape)}; "
                f"encode the goal with the goal discretizer"
            )
        return torch.cat((goals.to(trajectories.device, trajectories.dtype), trajectories), dim=1)

    def head_logits(self, hidden: Tensor, start: int) -> Tensor:
        """Logits ``[B, L, N+1]`` of the last block's outputs ``hidden [B, L, d]`` (before ``ln_f``)
        of trajectory tokens at positions ``start, start+1, ...``; each takes its dim's head.

        Raises:
            TtrlError: ``start`` is a goal position (goal outputs predict nothing).
        """
        goal_dim = self.config.goal_dim
        if start < goal_dim:
            raise TtrlError(
                f"position {start} is in the goal (goal_dim={goal_dim}); only trajectory tokens "
                f"have logits"
            )
        # TransitionLayout.dims on the host, written out: indexing a table by the position would
        # make torch.compile specialise on (and recompile for) every decoding position.
        return self.head(self.ln_f(hidden), (start - goal_dim) % self.config.transition_dim)

    def run(
        self,
        trajectories: Tensor,
        cache: AttentionCache,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        last_only: bool = False,
    ) -> tuple[Tensor, tuple[Tensor, ...] | None, tuple[Tensor, ...] | None]:
        """The blocks over ``trajectories [B, L]`` at positions ``cache.length ...``, keys/values
        kept and attention run by ``cache``; returns the hidden states before ``ln_f`` (the last
        token's only with ``last_only``), and the hidden states and maps when asked for.

        Positions are those of the whole sequence: for a goal model, tokens at positions below
        ``goal_dim`` are goal tokens (any chunking of goal and trajectory works).
        """
        length = trajectories.shape[1]
        start = cache.length
        end = start + length
        if end > self.config.block_size:
            raise TtrlError(
                f"sequence of {end} tokens ({start} cached + {length} new) exceeds the model's "
                f"block_size {self.config.block_size}; crop the context to whole transitions"
            )
        x = self.drop(self._embed(trajectories, start, end))
        cache.start_chunk(torch.arange(start, end, device=trajectories.device))
        checkpointing = self.gradient_checkpointing and self.training
        hidden, maps = [], []
        final = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            if output_hidden_states:
                hidden.append(x)
            last = last_only and i == final  # only the last token's output is read
            if checkpointing:
                x, weights = torch.utils.checkpoint.checkpoint(
                    block, x, cache, i, output_attentions, last, use_reentrant=False
                )
            else:
                x, weights = block(x, cache, i, output_attentions, last)
            maps.append(weights)
        cache.end_chunk()
        if output_hidden_states:
            hidden.append(x)
        return (
            x,
            tuple(hidden) if output_hidden_states else None,
            tuple(maps) if output_attentions else None,
        )

    def _embed(self, tokens: Tensor, start: int, end: int) -> Tensor:
        """Embeddings ``[B, L, d]`` of the tokens at positions ``start .. end - 1``."""
        goal_end = min(max(self.config.goal_dim, start), end)  # the chunk's goal tokens end here
        goal = None
        if goal_end > start:  # the goal: its own table, no position embedding
            goal = self.goal_emb(tokens[:, : goal_end - start] + self.token_offsets[start:goal_end])
            if goal_end == end:
                return goal
            tokens, start = tokens[:, goal_end - start :], goal_end
        ids = torch.where(
            tokens == self.config.vocab_size,
            self.config.vocab_size * self.config.transition_dim,
            tokens + self.token_offsets[start:end],
        )
        x = self.tok_emb(ids) + self.pos_emb[:, start:end]
        return x if goal is None else torch.cat((goal, x), dim=1)

    def _weighted_loss(
        self, logits: Tensor, targets: Tensor, loss_mask: Tensor | None, start: int
    ) -> Tensor:
        """Cross-entropy weighted per target dimension, times the loss mask, averaged over all positions."""
        batch, length, n_classes = logits.shape
        per_token = F.cross_entropy(
            logits.reshape(-1, n_classes).float(), targets.reshape(-1), reduction="none"
        ).view(batch, length)
        per_token = per_token * self.loss_weights[start : start + length]
        if loss_mask is not None:
            per_token = per_token * loss_mask.reshape(batch, length)
        return per_token.mean()

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, which: str = "last") -> TrajectoryTransformer:
        """Load a model from a bundle file, a run dir, a :meth:`save_pretrained` dir or a HuggingFace dir.

        ``which`` picks ``checkpoints/{which}.safetensors`` in a run dir. HuggingFace dirs (``config.json`` +
        ``pytorch_model.bin`` or ``model.safetensors``) are read without importing transformers.
        The model is returned on the CPU in eval mode (as transformers does); call ``.train()`` to train.
        """
        from ttrl.model.pretrained import load_config_and_weights, load_weights

        config, state_dict = load_config_and_weights(path, which=which)
        model = cls(config)
        load_weights(model, state_dict)
        return model.eval()

    def save_pretrained(self, directory: str | os.PathLike, hf_format: bool = False) -> Path:
        """Save ``directory/ttrl_model.safetensors`` (a ttrl bundle), or HuggingFace's layout.

        Raises:
            TtrlError: ``hf_format`` for a goal-conditioned model (HuggingFace's format has no goal).
        """
        from ttrl.model.pretrained import save_model

        if hf_format:
            self.config.to_hf_dict()  # refuses a goal model before anything is written

        return save_model(self, directory, hf_format=hf_format)
