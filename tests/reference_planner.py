"""The released beam search, written plainly: one environment, no cache, the whole cropped window is
re-run for every sampled token. Tests compare ttrl's planner against it.

One change from the released code: a token is drawn by inverse-CDF sampling from one uniform per row
(``torch.rand``) instead of ``torch.multinomial``, as ttrl's planner draws them so that each
environment can read its own random stream."""

from __future__ import annotations

import torch


def reference_filter_cdf(logits, threshold):
    """Released tail filter: sort, cumulate, mask everything at or below the threshold prob."""
    probs = logits.softmax(dim=-1)
    probs_sorted, _ = torch.sort(probs, dim=-1)
    probs_cum = torch.cumsum(probs_sorted, dim=-1)
    mask = probs_cum < threshold
    bins = torch.arange(logits.shape[-1], device=logits.device)
    masked_inds = torch.argmax(mask * bins, dim=-1)
    probs_threshold = probs_sorted[torch.arange(logits.shape[0]), masked_inds]
    out = logits.clone()
    out[probs <= probs_threshold.unsqueeze(-1)] = -1000
    return out


def reference_top_k(logits, k):
    values, _ = torch.topk(logits, k)
    out = logits.clone()
    out[out < values[:, [-1]]] = -float("inf")
    return out


def reference_forward_last(model, x, max_block, transition_dim):
    """Logits at the last position after cropping whole transitions from the front."""
    if max_block is not None and x.shape[1] > max_block:
        excess = x.shape[1] - max_block
        n_crop = ((excess + transition_dim - 1) // transition_dim) * transition_dim
        x = x[:, n_crop:]
    return model(x).logits[:, -1]


def reference_sample_n(model, x, n, max_block, transition_dim, topk, cdf, generator, logp):
    probs_seen = []
    for _ in range(n):
        logits = reference_forward_last(model, x, max_block, transition_dim)
        raw_probs = logits.softmax(dim=-1)
        if cdf is not None:
            logits = reference_filter_cdf(logits, cdf)
        if topk is not None:
            logits = reference_top_k(logits, topk)
        # inverse-CDF sampling: each row's token is where its own uniform falls in the cumulative
        # distribution; the rows read the generator's numbers in order, one per row and token
        uniforms = torch.rand(len(x), generator=generator, dtype=logits.dtype)
        cumulative = logits.softmax(dim=-1).cumsum(dim=-1)
        indices = torch.searchsorted(cumulative, uniforms[:, None] * cumulative[:, -1:], right=True)
        indices = indices.clamp(max=logits.shape[-1] - 1)
        logp += torch.log(raw_probs[torch.arange(len(x)), indices[:, 0]])
        x = torch.cat([x, indices], dim=1)
        probs_seen.append(raw_probs)
    return x, probs_seen


@torch.no_grad()
def reference_beam_plan(model, discretizer, prefix, cfg, generator=None):
    """Plan for one environment; ``prefix`` is 1-D. Returns a dict with the best plan."""
    model.eval()
    mc = model.config
    S, A, T, H = mc.observation_dim, mc.action_dim, mc.transition_dim, cfg.horizon
    max_block = None if cfg.window_transitions is None else cfg.window_transitions * T - 1
    x = prefix[None].repeat(cfg.beam_width, 1)
    dtype = next(model.parameters()).dtype
    rewards = torch.zeros(cfg.beam_width, H + 1, dtype=dtype)
    step_values = torch.zeros(cfg.beam_width, H, dtype=dtype)
    logp = torch.zeros(cfg.beam_width, dtype=dtype)
    discounts = cfg.discount ** torch.arange(H + 1, dtype=dtype)
    common = dict(max_block=max_block, transition_dim=T, generator=generator)
    for t in range(H):
        x = x.repeat(cfg.n_expand, 1)
        rewards = rewards.repeat(cfg.n_expand, 1)
        step_values = step_values.repeat(cfg.n_expand, 1)
        logp = logp.repeat(cfg.n_expand)
        x, _ = reference_sample_n(model, x, A, topk=cfg.k_act, cdf=cfg.cdf_act, logp=logp, **common)
        x, probs = reference_sample_n(
            model, x, 2, topk=cfg.k_rew, cdf=cfg.cdf_rew, logp=logp, **common
        )
        r_t = discretizer.expected_value(probs[0], S + A)
        v_t = discretizer.expected_value(probs[1], S + A + 1)
        rewards[:, t] = torch.as_tensor(r_t, dtype=dtype)
        rewards[:, t + 1] = torch.as_tensor(v_t, dtype=dtype)
        step_values[:, t] = torch.as_tensor(v_t, dtype=dtype)
        values = logp if cfg.objective == "likelihood" else (rewards * discounts).sum(dim=-1)
        values, inds = torch.topk(values, cfg.beam_width)
        x, rewards, step_values, logp = x[inds], rewards[inds], step_values[inds], logp[inds]
        if t < H - 1:
            x, _ = reference_sample_n(
                model, x, S, topk=cfg.k_obs, cdf=cfg.cdf_obs, logp=logp, **common
            )
    best = values.argmax()
    tokens = x.view(cfg.beam_width, -1, T)[:, -H:][best]
    return {
        "tokens": tokens,
        # the released reconstruction clips out-of-range ids (the stop token) to the last bin
        "action": discretizer.decode(
            tokens[0, S : S + A].clamp(0, discretizer.n_bins - 1), dims=slice(S, S + A)
        ),
        "rewards": rewards[best, :H],
        "values": step_values[best],
        "score": values[best],
    }
