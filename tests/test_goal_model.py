"""The goal-conditioned Trajectory Transformer (one model, an optional goal prefix) and its data.

The model against a position-by-position reference built from the definition, every cache against
the full forward, and hindsight relabelling against brute-force loops.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ttrl.data import load_transitions
from ttrl.data.goals import (
    GoalTokenDataset,
    fit_goal_discretizer,
    hindsight_goal_steps,
)
from ttrl.data.loading import make_transitions
from ttrl.data.preprocess import preprocess
from ttrl.discretization import Discretizer
from ttrl.errors import TtrlError
from ttrl.layout import PREFIX, VALUE
from ttrl.model import TrajectoryTransformer, TrajectoryTransformerConfig, reorder_cache
from ttrl.planning import PlannerConfig
from ttrl.planning.decoder import CachedDecoder
from ttrl.planning.window import ModelWindow

S, A, N, G = 3, 2, 10, 2  # 3 observation dims, 2 action dims, 10 bins, a 2-token goal
T = S + A + 2
SIZES = dict(vocab_size=N, n_layer=2, n_head=2, n_embd=16)


def goal_model(
    seed: int = 0, goal_dim: int = G, sequence_length: int = 4, double: bool = False
) -> TrajectoryTransformer:
    """A small random model; position embeddings and heads given content so that bugs show."""
    torch.manual_seed(seed)
    config = TrajectoryTransformerConfig.for_dims(
        S, A, sequence_length=sequence_length, goal_dim=goal_dim, **SIZES
    )
    model = TrajectoryTransformer(config).eval()
    if double:
        model = model.double()
    with torch.no_grad():
        model.pos_emb.normal_(0.0, 0.5)
        model.head.weight.mul_(4.0)
    return model


def random_tokens(batch: int, length: int, seed: int = 1, stops: bool = True) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, N, (batch, length), generator=generator)
    if stops:
        tokens = tokens.masked_fill(torch.rand(batch, length, generator=generator) < 0.1, N)
    return tokens


def random_goals(batch: int, seed: int = 2) -> torch.Tensor:
    return torch.randint(0, N, (batch, G), generator=torch.Generator().manual_seed(seed))


def allowed_by_definition(length: int, goal_dim: int) -> torch.Tensor:
    """(query, key) pairs from the definition, one pair at a time: causal; a key is hidden when
    it is a trajectory value token (its dim within its transition, counted after the goal, is T-1)."""
    allowed = torch.zeros(length, length, dtype=torch.bool)
    for q in range(length):
        for k in range(q + 1):
            is_value = k >= goal_dim and (k - goal_dim) % T == T - 1
            allowed[q, k] = not is_value
    return allowed


def reference_forward(model, trajectories, goals):
    """The goal model written out position by position from its definition, sharing the weights."""
    cfg = model.config
    batch, length = trajectories.shape
    goal_dim = goals.shape[1]
    rows = []
    for i in range(goal_dim):  # the goal: its own table, one row block per goal dim, no position
        rows.append(model.goal_emb.weight[goals[:, i] + i * N])
    for j in range(length):  # trajectory token j sits at position goal_dim + j
        token, dim = trajectories[:, j], j % T
        ids = torch.where(token == N, N * T, token + dim * N)
        rows.append(model.tok_emb.weight[ids] + model.pos_emb[0, goal_dim + j])
    x = torch.stack(rows, 1)
    total = goal_dim + length
    allowed = allowed_by_definition(total, goal_dim)
    for block in model.blocks:
        h = F.layer_norm(x, (cfg.n_embd,), block.ln1.weight, block.ln1.bias)
        q, k, v = (
            layer(h).view(batch, total, cfg.n_head, -1).transpose(1, 2)
            for layer in (block.attn.query, block.attn.key, block.attn.value)
        )
        scores = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).masked_fill(
            ~allowed, float("-inf")
        )
        y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, total, cfg.n_embd)
        x = x + block.attn.proj(y)
        h = F.layer_norm(x, (cfg.n_embd,), block.ln2.weight, block.ln2.bias)
        x = x + block.l2(F.gelu(block.l1(h)))
    x = F.layer_norm(x, (cfg.n_embd,), model.ln_f.weight, model.ln_f.bias)
    # goal outputs are dropped; trajectory token j uses the head of its dim
    return torch.stack(
        [x[:, goal_dim + j] @ model.head.weight[j % T].T for j in range(length)], dim=1
    )


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and message
    return message


# --- layout, mask and logits --------------------------------------------------------------------


def test_goal_prefix_positions_and_attention_mask_come_from_the_layout():
    model = goal_model()
    config = model.config
    layout = config.layout
    assert layout.prefix_length == G and config.block_size == G + 4 * T - 1
    positions = torch.arange(config.block_size)
    # goal tokens use their own table's row blocks; trajectory positions start after the goal
    assert model.token_offsets[:G].tolist() == [i * N for i in range(G)]
    assert model.token_offsets[G:].tolist() == [(p % T) * N for p in range(config.block_size - G)]
    assert (layout.kinds(positions)[:G] == PREFIX).all()
    values = positions[layout.kinds(positions) == VALUE]
    assert values.tolist() == list(range(G + T - 1, config.block_size, T))
    allowed = model.allowed
    assert torch.equal(allowed, allowed_by_definition(config.block_size, G))
    # goal tokens are causal among themselves; every trajectory token sees the whole goal
    assert torch.equal(allowed[:G, :G], torch.ones(G, G, dtype=torch.bool).tril())
    assert allowed[G:, :G].all()
    # no query sees a value key; the released code's unshifted column T-1 is an observation here
    assert not allowed[:, values].any()
    assert allowed[T - 1 :, T - 1].all() and not layout.is_value_position(T - 1)
    # loss weights: the target of position p is the token at p + 1; goal targets weigh 0
    assert model.loss_weights[: G - 1].eq(0).all() and model.loss_weights[G - 1] == 1.0
    assert model.loss_weights[G + S - 1 : G + S + A - 1].eq(config.action_weight).all()


def test_logits_equal_the_reference_built_from_the_definition():
    model = goal_model(double=True)
    trajectories, goals = random_tokens(3, 4 * T - 1), random_goals(3)
    with torch.no_grad():
        out = model(trajectories, goals=goals, output_attentions=True)
        expected = reference_forward(model, trajectories, goals)
    assert out.logits.shape == (3, 4 * T - 1, N + 1)
    torch.testing.assert_close(out.logits, expected, rtol=1e-12, atol=1e-12)
    # the attention maps (over goal + trajectory) obey the mask: value keys get no weight, the
    # goal gets weight from every trajectory query
    values = torch.arange(G + T - 1, G + 4 * T - 1, T)
    for weights in out.attentions:
        assert weights.shape == (3, 2, G + 4 * T - 1, G + 4 * T - 1)
        assert weights[..., values].eq(0).all()
        assert (weights[:, :, G:, :G] > 0).all()
        assert weights[:, :, :G, :G].triu(1).eq(0).all()


def test_another_goal_changes_the_logits():
    model = goal_model()
    trajectories = random_tokens(2, 10)
    with torch.no_grad():
        first = model(trajectories, goals=random_goals(2, seed=2)).logits
        second = model(trajectories, goals=random_goals(2, seed=3)).logits
    assert not torch.allclose(first, second)


# The pre-goal model (ttrl at commit 7db5532), TINY config of tests/test_model.py, seed 0, float64:
# logits[1, 9, :4], logits.sum() and the loss of the tokens below.
OLD_LOGITS = [-0.20499860799497482, 0.88357665070876712, -0.16221810131846626, 0.27968493020846452]
OLD_SUM, OLD_LOSS = -10.04896548832562075, 5.89527744054794312


def test_a_model_without_goal_is_the_model_from_before_goals():
    tiny = dict(observation_dim=3, action_dim=2, transition_dim=7, block_size=34, **SIZES)
    torch.manual_seed(0)
    model = TrajectoryTransformer(TrajectoryTransformerConfig(**tiny)).double().eval()
    generator = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, N + 1, (2, 34), generator=generator)
    targets = torch.randint(0, N + 1, (2, 34), generator=generator)
    with torch.no_grad():
        out = model(tokens, targets=targets)
    torch.testing.assert_close(out.logits[1, 9, :4], torch.tensor(OLD_LOGITS, dtype=torch.float64))
    torch.testing.assert_close(out.logits.sum(), torch.tensor(OLD_SUM, dtype=torch.float64))
    torch.testing.assert_close(out.loss, torch.tensor(OLD_LOSS, dtype=torch.float64))
    # the same state dict and config fields as before: no goal table, no goal_dim field
    assert not any(name.startswith("goal_emb") for name in model.state_dict())
    assert "goal_dim" not in model.config.to_dict() and "goal_dim" not in model.config.to_hf_dict()
    explicit = TrajectoryTransformerConfig(**tiny, goal_dim=0)
    assert explicit == model.config
    # a goal model built from the same seed starts with the same trajectory weights
    plain, goal = goal_model(goal_dim=0), goal_model(goal_dim=G)
    goal_state = goal.state_dict()
    for name, tensor in plain.state_dict().items():
        if name != "pos_emb":  # one row per position: the goal model's block is longer
            assert torch.equal(tensor, goal_state[name]), name
    assert goal_state["goal_emb.weight"].shape == (N * G, 16)


# --- caches -------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunks", [[1] * 27, [0, 5, 1, 1, 20], [6, 1, 13, 7], [13, 14]], ids=str)
def test_incremental_decoding_with_a_goal_equals_the_full_forward(chunks):
    model = goal_model()
    trajectories, goals = random_tokens(3, sum(chunks), seed=5), random_goals(3)
    with torch.no_grad():
        full = model(trajectories, goals=goals).logits
        past, logits, begin = None, [], 0
        for i, length in enumerate(chunks):  # the goal goes with the first chunk only
            out = model(
                trajectories[:, begin : begin + length],
                goals=goals if i == 0 else None,
                past_key_values=past,
                use_cache=True,
            )
            past, begin = out.past_key_values, begin + length
            logits.append(out.logits)
    torch.testing.assert_close(torch.cat(logits, 1), full, atol=1e-5, rtol=1e-5)
    assert past[0][0].shape[2] == G + sum(chunks)  # the cache holds the goal too


def test_a_reordered_cache_with_a_goal_continues_the_selected_rows():
    model = goal_model()
    trajectories, goals = random_tokens(4, 20), random_goals(4)
    with torch.no_grad():
        past = model(trajectories[:, :12], goals=goals, use_cache=True).past_key_values
        index = torch.tensor([3, 3, 0, 2, 1])
        continued = model(trajectories[index, 12:], past_key_values=reorder_cache(past, index))
        full = model(trajectories[index], goals=goals[index]).logits[:, 12:]
    torch.testing.assert_close(continued.logits, full, atol=1e-5, rtol=1e-5)


def crop_start(length: int, max_window: int | None) -> int:
    """Whole transitions cut from the front of ``length`` trajectory tokens (the goal never)."""
    if max_window is None or length <= max_window:
        return 0
    return math.ceil((length - max_window) / T) * T


# None: no crop; 3: the window first slides in the middle of the plan; 2: it slides every transition
@pytest.mark.parametrize("window_transitions", [None, 3, 2])
def test_the_planners_cached_window_with_a_goal_equals_the_uncached_forward(window_transitions):
    """A beam search's moves (expand, sample, keep) through ModelWindow with the planner's
    CachedDecoder and without a cache, each token checked against the model on the cropped window
    with the goal in front."""
    model = goal_model(double=True, sequence_length=6)
    layout = model.config.layout
    max_window = PlannerConfig(window_transitions=window_transitions).window_tokens(layout)
    n_env, beam, n_expand, horizon = 2, 3, 2, 3
    generator = torch.Generator().manual_seed(0)
    prefix = torch.randint(0, N, (n_env, 2 * T + S), generator=generator)
    goals = torch.randint(0, N, (n_env, G), generator=generator)
    decoder = CachedDecoder(
        model, n_env, n_env * beam * n_expand, max_window or model.config.block_size
    )
    cached = ModelWindow(model, prefix, layout, max_window, decoder, goals=goals)
    plain = ModelWindow(model, prefix, layout, max_window, None, goals=goals)
    state = {"sequences": prefix.clone(), "row_env": torch.arange(n_env), "slides": set()}

    def check() -> None:
        sequences, row_env = state["sequences"], state["row_env"]
        length = sequences.shape[1]
        crop = crop_start(length, max_window)
        state["slides"].add(crop)
        expected = model(sequences[:, crop:], goals=goals[row_env]).logits[:, -1]
        for window in (cached, plain):
            got = window.next_logits(sequences, length, row_env)
            torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)

    def append() -> None:
        rows = state["sequences"].shape[0]
        token = torch.randint(0, N, (rows, 1), generator=generator)
        state["sequences"] = torch.cat((state["sequences"], token), 1)

    def select(rows: torch.Tensor) -> None:
        state["sequences"] = state["sequences"][rows]
        state["row_env"] = state["row_env"][rows]

    with torch.no_grad():
        for t in range(horizon):
            check()
            factor = beam * n_expand if t == 0 else n_expand
            per_env = state["sequences"].shape[0] // n_env
            tiled = torch.arange(n_env * per_env).view(n_env, 1, per_env)
            select(tiled.expand(-1, factor, -1).reshape(-1))
            cached.expand(factor)
            plain.expand(factor)
            append()  # the first action token, from the logits before the expand
            for _ in range(A + 1):  # the other actions, the reward and the value
                check()
                append()
            per_env = state["sequences"].shape[0] // n_env
            keep = torch.cat(
                [
                    e * per_env + torch.randperm(per_env, generator=generator)[:beam]
                    for e in range(2)
                ]
            )
            select(keep)
            cached.select(keep)
            plain.select(keep)
            if t < horizon - 1:
                for _ in range(S):
                    check()
                    append()
    if window_transitions is not None:
        assert len(state["slides"]) > 1  # the window did slide, and the goal stayed in front


# --- loss ---------------------------------------------------------------------------------------


def test_the_loss_covers_trajectory_tokens_only():
    model = goal_model(double=True)
    trajectories, goals = random_tokens(2, 4 * T - 1), random_goals(2)
    targets = random_tokens(2, 4 * T - 1, seed=8)
    mask = (torch.rand(2, 4 * T - 1, generator=torch.Generator().manual_seed(4)) > 0.2).double()
    out = model(
        trajectories, goals=goals, targets=targets, attention_mask=mask, output_hidden_states=True
    )
    # targets, loss mask and logits are the trajectory's: weights by the dim of each target
    weight = [1.0] * S + [model.config.action_weight] * A + [1.0, 1.0]
    expected = sum(
        F.cross_entropy(out.logits[b, j], targets[b, j]) * weight[(j + 1) % T] * mask[b, j]
        for b in range(2)
        for j in range(4 * T - 1)
    ) / (2 * (4 * T - 1))
    torch.testing.assert_close(out.loss, expected)
    # the goal's outputs never reach the loss: no gradient at the goal positions of the last block
    last = out.hidden_states[-1]
    assert last.shape[1] == G + 4 * T - 1
    (gradient,) = torch.autograd.grad(out.loss, last)
    assert gradient[:, :G].eq(0).all() and gradient[:, G:].abs().sum() > 0
    # ...while the goal's embeddings do get gradients (through attention)
    (goal_gradient,) = torch.autograd.grad(
        model(trajectories, goals=goals, targets=targets).loss, model.goal_emb.weight
    )
    assert goal_gradient.abs().sum() > 0


# --- checkpoints and bad input -------------------------------------------------------------------


def test_a_goal_model_round_trips_as_a_ttrl_bundle(tmp_path):
    model = goal_model()
    model.save_pretrained(tmp_path)
    loaded = TrajectoryTransformer.from_pretrained(tmp_path)
    assert loaded.config == model.config and loaded.goal_dim == G
    trajectories, goals = random_tokens(2, 9), random_goals(2)
    with torch.no_grad():
        assert torch.equal(
            loaded(trajectories, goals=goals).logits, model(trajectories, goals=goals).logits
        )


def test_bad_goal_input_is_one_line(tmp_path):
    model = goal_model()
    trajectories, goals = random_tokens(2, 9), random_goals(2)
    with pytest.raises(TtrlError) as err:
        model(trajectories)
    assert "a goal-conditioned model needs goals=" in one_line(err)
    for bad in (goals[:, :1], goals[:1], goals.float()):
        with pytest.raises(TtrlError) as err:
            model(trajectories, goals=bad)
        assert "goals must be integer tokens of shape [batch, goal_dim] = [2, 2]" in one_line(err)
    past = model(trajectories, goals=goals, use_cache=True).past_key_values
    with pytest.raises(TtrlError) as err:
        model(trajectories[:, :1], goals=goals, past_key_values=past)
    assert "already holds the goal" in one_line(err)
    with pytest.raises(TtrlError) as err:
        goal_model(goal_dim=0)(trajectories, goals=goals)
    assert "takes no goals" in one_line(err)
    with pytest.raises(TtrlError) as err:
        model.save_pretrained(tmp_path / "hf", hf_format=True)
    assert "has no HuggingFace format" in one_line(err)
    assert not (tmp_path / "hf").exists()
    with pytest.raises(TtrlError) as err:
        TrajectoryTransformerConfig.for_dims(S, A, goal_dim=-1)
    assert "goal_dim=-1" in one_line(err)


# --- data: hindsight goals ----------------------------------------------------------------------

LENGTHS = [6, 1, 9, 4]  # a 1-step episode has no window: later episodes' rows must still line up


def goal_transitions(with_goals: bool = True):
    rng = np.random.default_rng(0)
    n = sum(LENGTHS)
    ends = np.cumsum(LENGTHS) - 1
    desired = np.repeat(rng.normal(size=(len(LENGTHS) * 2, 2)), math.ceil(n / 8), axis=0)[:n]
    goals = {"achieved_goal": rng.normal(size=(n, 2)), "desired_goal": desired}
    return make_transitions(
        rng.normal(size=(n, S)),
        rng.uniform(-1, 1, size=(n, A)),
        rng.normal(size=n),
        np.zeros(n, bool),
        np.isin(np.arange(n), ends),
        goals=goals if with_goals else None,
        source="toy goals",
    )


def goal_dataset(relabel: str, sequence_length: int = 3):
    transitions = goal_transitions()
    trajectories = preprocess(transitions, max_path_length=20)
    with warnings.catch_warnings():  # a few collapsed bins on 20 rows
        warnings.simplefilter("ignore")
        discretizer = Discretizer.fit(trajectories.joined, n_bins=N)
        goal_discretizer = fit_goal_discretizer(transitions, n_bins=N)
    dataset = GoalTokenDataset.build(
        trajectories,
        transitions,
        discretizer,
        goal_discretizer,
        relabel=relabel,
        sequence_length=sequence_length,
        max_path_length=20,
    )
    return dataset, transitions, trajectories, discretizer, goal_discretizer


def brute_force_windows():
    """(first step, last step of its episode) of every window, episode by episode."""
    windows, start = [], 0
    for length in LENGTHS:
        windows += [(start + t, start + length - 1) for t in range(length - 1)]
        start += length
    return windows


@pytest.mark.parametrize("relabel", ["future", "final", "desired"])
def test_hindsight_goals_equal_a_brute_force_loop(relabel):
    dataset, transitions, trajectories, discretizer, goal_discretizer = goal_dataset(relabel)
    achieved = goal_discretizer.encode(transitions.goal("achieved_goal"))
    desired = goal_discretizer.encode(transitions.goal("desired_goal"))
    windows = brute_force_windows()
    assert len(dataset) == len(windows) and dataset.goal_dim == 2
    indices = torch.arange(len(windows))
    x, y, mask, goals = dataset.windows(indices, torch.Generator().manual_seed(3))
    uniforms = torch.rand(
        len(windows), generator=torch.Generator().manual_seed(3), dtype=torch.float64
    )
    for i, (first, last) in enumerate(windows):
        # the window starts at its step: the bookkeeping follows the tokens
        assert x[i, :T].tolist() == discretizer.encode(trajectories.joined[first]).tolist()
        if relabel == "final":
            expected = achieved[last]
        elif relabel == "desired":
            expected = desired[first]
        else:  # one of the later steps of the episode, uniformly
            later = [achieved[k] for k in range(first + 1, last + 1)]
            expected = later[int(uniforms[i] * len(later))]
        assert goals[i].tolist() == expected.tolist(), (i, first, last)
    assert goals.dtype == torch.long and x.shape == y.shape == mask.shape == (
        len(windows),
        3 * T - 1,
    )


def test_future_goals_are_uniform_over_the_later_steps():
    first, last = torch.full((20000,), 7), torch.full((20000,), 11)
    uniforms = torch.rand(20000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    steps = hindsight_goal_steps(first, last, "future", uniforms)
    values, counts = steps.unique(return_counts=True)
    assert values.tolist() == [8, 9, 10, 11]  # never the window's own step or an earlier one
    assert (counts - 5000).abs().max() < 300
    edges = hindsight_goal_steps(
        torch.tensor([7, 7]),
        torch.tensor([11, 11]),
        "future",
        torch.tensor([0.0, 1 - 2**-53], dtype=torch.float64),
    )
    assert edges.tolist() == [8, 11]


def test_sampled_batches_split_and_validation_carry_their_goals():
    dataset, _, trajectories, discretizer, _ = goal_dataset("future")
    x, _, _, goals = dataset.sample(16, torch.Generator().manual_seed(1))
    generator = torch.Generator().manual_seed(1)  # the same draws: indices, then the goals' steps
    indices = torch.randint(len(dataset), (16,), generator=generator)
    assert torch.equal(goals, dataset.goals(indices, generator))
    assert torch.equal(x, dataset.trajectory_windows.windows(indices)[0])
    train, val = dataset.split(0.34, seed=0)
    assert len(train) + len(val) == len(dataset) and len(val) > 0
    for part in (train, val):
        first, last = part.window_steps(torch.arange(len(part)))
        x, *_ = part.trajectory_windows.windows(torch.arange(len(part)))
        for i in range(len(part)):
            assert x[i, :T].tolist() == discretizer.encode(trajectories.joined[first[i]]).tolist()
        assert (first < last).all()
    one = [batch[3] for batch in val.iter_windows(2)]
    again = [batch[3] for batch in val.iter_windows(2)]
    assert all(torch.equal(a, b) for a, b in zip(one, again, strict=True))  # fixed validation goals


def test_bad_goal_data_is_one_line():
    transitions = goal_transitions(with_goals=False)
    trajectories = preprocess(transitions, max_path_length=20)
    discretizer = Discretizer.fit(trajectories.joined, n_bins=N, kind="uniform")
    for fail in (
        lambda: fit_goal_discretizer(transitions, n_bins=N),
        lambda: GoalTokenDataset.build(
            trajectories, transitions, discretizer, discretizer, max_path_length=20
        ),
    ):
        with pytest.raises(TtrlError) as err:
            fail()
        assert "toy goals has no 'achieved_goal' field" in one_line(err)
    with pytest.raises(TtrlError) as err:
        goal_dataset("nearest")
    assert "unknown goal relabelling 'nearest'" in one_line(err)


@pytest.mark.filterwarnings("ignore:quantile discretizer")  # 300 steps: some empty bins
def test_a_goal_model_trains_on_pointmaze_windows(minari_root):
    from ttrl.making.maze import make_maze_dataset

    make_maze_dataset("pointmaze-umaze", n_steps=300, seed=0, progress=False, max_episode_steps=100)
    transitions = load_transitions("pointmaze-umaze", require_goals=True)
    # PointMaze's achieved goal is the observation's (x, y)
    np.testing.assert_array_equal(
        transitions.goal("achieved_goal"), transitions.observations[:, :2]
    )
    trajectories = preprocess(transitions, termination_penalty=None, max_path_length=100)
    discretizer = Discretizer.fit(trajectories.joined, n_bins=N)
    goal_discretizer = fit_goal_discretizer(transitions, n_bins=N)
    dataset = GoalTokenDataset.build(
        trajectories,
        transitions,
        discretizer,
        goal_discretizer,
        sequence_length=3,
        max_path_length=100,
    )
    torch.manual_seed(0)
    config = TrajectoryTransformerConfig.for_dims(
        transitions.observation_dim,
        transitions.action_dim,
        sequence_length=3,
        goal_dim=dataset.goal_dim,
        **SIZES,
    )
    model = TrajectoryTransformer(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    x, y, mask, goals = dataset.sample(32, generator)
    losses = []
    for _ in range(15):  # one batch, a few steps: the loss falls
        loss = model(x, goals=goals, targets=y, attention_mask=mask).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert math.isfinite(losses[0]) and losses[-1] < losses[0]
