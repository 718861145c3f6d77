"""The compiled cache attention against attention written out, and how an implementation is picked."""

from __future__ import annotations

import warnings

import pytest
import torch

from ttrl import compiled
from ttrl.errors import TtrlError
from ttrl.planning import cached_attention


@pytest.fixture(scope="module")
def kernel():
    return cached_attention.load_extension()


def reference(query, key, value, stored, first, own_k, own_v, shared, parent, n_env, children,
              own_visible, scale, history=None):  # fmt: skip
    """Each (row, query) gathers the slots it sees and takes softmax(q k^T * scale) v.

    ``shared``/``parent`` are (keys, values, slots in use) or None; ``history`` maps a beam (a
    child's parent) to its history's (keys, values) ``[heads, slots, head_dim]``, or is None. The
    result is laid out like the kernel's, ``[rows, heads, queries, head_dim]``.
    """
    own_k, own_v = own_k.clone(), own_v.clone()
    for i, offset in enumerate(stored):
        own_k[:, :, first + i] = key[:, :, offset]
        own_v[:, :, first + i] = value[:, :, offset]
    rows, heads, n_query, d = query.shape
    per_env = rows // n_env
    out = torch.empty(rows, n_query, heads * d, dtype=query.dtype)
    for r in range(rows):
        env, member = divmod(r, per_env)
        keys, values = [], []
        if shared is not None:
            keys.append(shared[0][env, :, : shared[2]])
            values.append(shared[1][env, :, : shared[2]])
        p = env * (per_env // children) + member % (per_env // children)
        if history is not None:
            keys.append(history(p)[0])
            values.append(history(p)[1])
        if parent is not None:
            keys.append(parent[0][p, :, : parent[2]])
            values.append(parent[1][p, :, : parent[2]])
        for i in range(n_query):
            k = torch.cat([*keys, own_k[r, :, : own_visible[i]]], dim=1)  # [heads, slots, d]
            v = torch.cat([*values, own_v[r, :, : own_visible[i]]], dim=1)
            weights = (query[r, :, i, None] @ k.transpose(1, 2) * scale).softmax(-1)
            out[r, i] = (weights @ v).reshape(-1)
    return out.view(rows, n_query, heads, d).transpose(1, 2), own_k, own_v


def random_case(dtype, head_dim, n_env=2, parents=3, children=2, n_query=1, generator=None):
    g = generator or torch.Generator().manual_seed(0)
    heads, slots = 4, 40
    rows = n_env * parents * children

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    chunk = 5
    # the query is a view into a fused qkv, as in the model: strided rows and heads
    qkv = randn(rows, chunk, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
    query, key, value = qkv.unbind(0)
    query = query[:, :, -n_query:]
    stored = [0, 1, 3, 4]  # offset 2 is a value token: no slot
    first = 7
    own_k, own_v = randn(rows, heads, slots, head_dim), randn(rows, heads, slots, head_dim)
    # whole buffers (more rows and slots than in use) and the slots to read of each
    shared = (*randn(2, n_env, heads, slots, head_dim).unbind(0), 13)
    parent = (*randn(2, rows, heads, slots, head_dim).unbind(0), 9)
    visible = [first + sum(o <= i for o in stored) for i in range(chunk)][-n_query:]
    return query, key, value, stored, first, own_k, own_v, shared, parent, visible


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("head_dim", [32, 12])  # the vectorised size and the plain loop
@pytest.mark.parametrize("n_query", [1, 5])
@pytest.mark.parametrize("segments", ["all", "own only", "no parent"])
def test_kernel_equals_attention_written_out(kernel, dtype, head_dim, n_query, segments):
    query, key, value, stored, first, own_k, own_v, shared, parent, visible = random_case(
        dtype, head_dim, n_query=n_query
    )
    if segments != "all":
        parent = None
    if segments == "own only":
        shared = None
    children = 2 if parent is not None else 1
    scale = head_dim**-0.5
    expected, expected_k, expected_v = reference(
        query, key, value, stored, first, own_k, own_v, shared, parent, 2, children, visible, scale
    )
    got = kernel.attend(
        query, key, value, stored, first, own_k, own_v,
        *(shared or (None, None, 0)), *(parent or (None, None, 0)), 2, children, visible, scale,
    )  # fmt: skip
    tolerance = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {}
    torch.testing.assert_close(got, expected, **tolerance)
    torch.testing.assert_close(own_k, expected_k, rtol=0, atol=0)  # new slots stored exactly
    torch.testing.assert_close(own_v, expected_v, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n_query", [1, 5])
def test_kernel_reads_history_levels_in_place(kernel, dtype, n_query):
    """Rows read their history (one run per level, shared by the beams that have it) where it lies
    in the pools: the same as attending to it written out before the parent's and own slots."""
    g = torch.Generator().manual_seed(5)
    query, key, value, stored, first, own_k, own_v, shared, parent, visible = random_case(
        dtype, 32, n_query=n_query, generator=g
    )
    heads, d, beams = 4, 32, 6  # 2 environments of 3 parents, each with 2 children
    lengths, groups = [4, 3], [3, beams]
    sizes = [n * heads * length * d for n, length in zip(groups, lengths, strict=True)]
    offsets = [5, 5 + sizes[0] + 7]  # levels anywhere in the pools
    pools = torch.randn(2, offsets[1] + sizes[1] + 2, generator=g, dtype=dtype)
    row_groups = torch.stack(
        [torch.randint(0, n, (beams,), generator=g) for n in groups], dim=1
    ).contiguous()

    def history(beam):
        runs = [
            pools[:, offset : offset + size].view(2, n, heads, length, d)[:, row_groups[beam, c]]
            for c, (offset, size, n, length) in enumerate(
                zip(offsets, sizes, groups, lengths, strict=True)
            )
        ]
        return torch.cat(runs, dim=2).unbind(0)  # keys, values [heads, slots, d]

    expected, _, _ = reference(
        query, key, value, stored, first, own_k, own_v, shared, parent, 2, 2, visible,
        32**-0.5, history,
    )  # fmt: skip
    got = kernel.attend(
        query, key, value, stored, first, own_k, own_v, *shared, *parent, 2, 2, visible,
        32**-0.5, *pools, offsets, lengths, groups, row_groups,
    )  # fmt: skip
    tolerance = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {}
    torch.testing.assert_close(got, expected, **tolerance)
    with pytest.raises(RuntimeError, match="names a run its level does not hold"):
        bad = row_groups.clone()
        bad[2, 0] = groups[0]
        kernel.attend(query, key, value, stored, first, own_k, own_v, *shared, *parent, 2, 2,
                      visible, 0.1, *pools, offsets, lengths, groups, bad)  # fmt: skip
    with pytest.raises(RuntimeError, match="history level 1 lies outside its pool"):
        kernel.attend(query, key, value, stored, first, own_k, own_v, *shared, *parent, 2, 2,
                      visible, 0.1, *pools, [offsets[0], offsets[1] + 3], lengths, groups,
                      row_groups)  # fmt: skip
    with pytest.raises(RuntimeError, match="a row for every beam"):
        kernel.attend(query, key, value, stored, first, own_k, own_v, *shared, *parent, 2, 2,
                      visible, 0.1, *pools, offsets, lengths, groups,
                      row_groups[:4].contiguous())  # fmt: skip


def test_kernel_is_exact_softmax_at_extreme_scores(kernel):
    """Large score gaps (probabilities near 0 and 1) and equal scores stay finite and normalised."""
    query, key, value, stored, first, own_k, own_v, shared, parent, visible = random_case(
        torch.float32, 32
    )
    query = query * 40  # scores in the hundreds: exp underflows for all but the best slot
    expected, _, _ = reference(
        query, key, value, stored, first, own_k, own_v, shared, parent, 2, 2, visible, 32**-0.5
    )
    got = kernel.attend(
        query, key, value, stored, first, own_k, own_v, *shared, *parent, 2, 2, visible, 32**-0.5
    )
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_kernel_refuses_inconsistent_arguments(kernel):
    query, key, value, stored, first, own_k, own_v, shared, parent, visible = random_case(
        torch.float32, 32
    )
    with pytest.raises(RuntimeError, match="own_visible"):
        kernel.attend(query, key, value, stored, first, own_k, own_v, *shared, *parent, 2, 2,
                      [*visible, 3], 0.1)  # fmt: skip
    with pytest.raises(RuntimeError, match="overflow"):
        kernel.attend(query, key, value, stored, 39, own_k, own_v, *shared, *parent, 2, 2,
                      visible, 0.1)  # fmt: skip
    with pytest.raises(RuntimeError, match="parent segment's keys and values must be alike"):
        kernel.attend(query, key, value, stored, first, own_k, own_v, *shared,
                      parent[0][:2], parent[1][:2], 9, 2, 2, visible, 0.1)  # fmt: skip
    with pytest.raises(RuntimeError, match="slot count exceeds its buffer"):
        kernel.attend(query, key, value, stored, first, own_k, own_v, shared[0], shared[1], 41,
                      *parent, 2, 2, visible, 0.1)  # fmt: skip
    with pytest.raises(RuntimeError, match="keys and values come together"):
        kernel.attend(query, key, value, stored, first, own_k, own_v, shared[0], None, 13,
                      *parent, 2, 2, visible, 0.1)  # fmt: skip
    with pytest.raises(RuntimeError, match="dtype"):
        kernel.attend(query, key, value, stored, first, own_k.double(), own_v, *shared, *parent,
                      2, 2, visible, 0.1)  # fmt: skip


def test_choice_reads_the_environment(monkeypatch):
    monkeypatch.setenv(cached_attention.ENV_VAR, "torch")
    assert cached_attention.kernel_for(torch.device("cpu"), torch.float32) is None
    monkeypatch.setenv(cached_attention.ENV_VAR, "fast")
    with pytest.raises(TtrlError, match="TTRL_CACHED_ATTENTION='fast' is not one of"):
        cached_attention.choice()
    monkeypatch.setenv(cached_attention.ENV_VAR, "auto")
    assert cached_attention.kernel_for(torch.device("cpu"), torch.float16) is None
    assert cached_attention.kernel_for(torch.device("meta"), torch.float32) is None


def test_a_failed_build_falls_back_to_torch_or_says_why(monkeypatch):
    def broken():
        raise OSError("g++: not found")

    monkeypatch.setattr(cached_attention, "load_extension", broken)
    monkeypatch.setattr(cached_attention, "_loaded", {})
    monkeypatch.setenv(cached_attention.ENV_VAR, "auto")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cached_attention.kernel_for(torch.device("cpu"), torch.float32) is None
    assert "did not build (g++: not found)" in str(caught[0].message)
    monkeypatch.setenv(cached_attention.ENV_VAR, "compiled")
    with pytest.raises(TtrlError, match="=compiled but the kernel did not build"):
        cached_attention.kernel_for(torch.device("cpu"), torch.float32)


def test_builds_are_named_by_source_and_cpu(monkeypatch):
    name = cached_attention.extension_name()
    monkeypatch.setattr(compiled, "cpu_flags", lambda: "flags : another cpu")
    assert cached_attention.extension_name() != name  # another CPU builds its own


@pytest.mark.slow
def test_a_build_lands_whole_in_the_kernel_folder(tmp_path, monkeypatch):
    """A fresh build (half a minute) lands under its name, replacing a stray file of that name; no
    scratch folder stays behind, and the file it leaves imports."""
    monkeypatch.setenv("TTRL_KERNEL_DIR", str(tmp_path))
    name = cached_attention.extension_name() + "_landing"  # new to this process: no name_v1
    monkeypatch.setattr(cached_attention, "extension_name", lambda: name)
    (tmp_path / f"{name}.so").write_bytes(b"not a shared library")
    module = cached_attention.load_extension()
    assert [p.name for p in tmp_path.iterdir()] == [f"{name}.so"]
    assert callable(module.attend)
    assert callable(cached_attention.load_extension().attend)  # the file it left, imported
