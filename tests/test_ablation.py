"""The planner ablation summary: points from results.json files, by hand."""

from __future__ import annotations

import json
import math

import pytest

from ttrl.errors import TtrlError
from ttrl.evaluation.ablation import load_points, main, parse_references


def write_results(
    folder,
    horizon,
    beam,
    scores,
    plan_seconds,
    decisions,
    dataset="hopper-medium",
    steps=8000,
    controller=None,
):
    folder.mkdir(parents=True)
    results = {
        "dataset": dataset,
        "complete": True,
        "episodes": [{"normalized_score": s, "length": 100 + i} for i, s in enumerate(scores)],
        "timing": {"plan_seconds": plan_seconds, "decisions": decisions},
        "config": {
            "planner": {"horizon": horizon, "beam_width": beam},
            "train_config": {"trainer": {"max_steps": steps}},
            **({} if controller is None else {"controller": controller}),
        },
    }
    (folder / "results.json").write_text(json.dumps(results))


def test_points_hold_score_and_cost_cheapest_first(tmp_path):
    write_results(tmp_path / "wide", 15, 128, [40.0, 50.0], plan_seconds=90.0, decisions=30)
    write_results(tmp_path / "narrow", 5, 8, [10.0, 20.0, 30.0], plan_seconds=6.0, decisions=60)
    narrow, wide = load_points([tmp_path])
    assert (narrow.horizon, narrow.beam_width, wide.horizon, wide.beam_width) == (5, 8, 15, 128)
    assert narrow.seconds_per_step == pytest.approx(0.1) and wide.seconds_per_step == 3.0
    assert narrow.score_mean == 20.0 and narrow.score_se == pytest.approx(10.0 / math.sqrt(3))
    assert narrow.mean_length == 101.0 and narrow.n_episodes == 3

    main([str(tmp_path), "--out", str(tmp_path / "out")])
    table = (tmp_path / "out" / "ablation.md").read_text().splitlines()
    assert table[2].startswith("| 8000 | H=5, beam 8 | 3 | 20.0 ± 5.8 |")
    assert table[3].startswith("| 8000 | H=15, beam 128 | 2 | 45.0 ± 5.0 |")
    assert (tmp_path / "out" / "ablation.png").stat().st_size > 0
    assert "seconds_per_step" in (tmp_path / "out" / "ablation.csv").read_text()


def test_evaluations_of_the_same_settings_are_pooled(tmp_path):
    write_results(tmp_path / "first", 15, 128, [40.0, 50.0], plan_seconds=90.0, decisions=30)
    write_results(tmp_path / "rest", 15, 128, [60.0], plan_seconds=10.0, decisions=20)
    (point,) = load_points([tmp_path])
    assert point.n_episodes == 3 and point.score_mean == 50.0
    assert point.seconds_per_step == pytest.approx(100.0 / 50)


def test_mixed_datasets_and_bad_files_are_refused_in_one_line(tmp_path):
    write_results(tmp_path / "a", 5, 8, [1.0], 1.0, 10)
    write_results(tmp_path / "b", 5, 8, [1.0], 1.0, 10, dataset="walker2d-medium")
    with pytest.raises(TtrlError, match="an ablation compares one dataset's"):
        load_points([tmp_path])
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "results.json").write_text("{}")
    with pytest.raises(TtrlError, match=r"is not a complete ttrl results\.json"):
        load_points([tmp_path / "c"])


def test_evaluations_under_other_controller_settings_are_not_mixed(tmp_path):
    every_step = {"context_transitions": 5, "plan_freq": 1}
    write_results(tmp_path / "a", 5, 8, [1.0], 1.0, 10, controller=every_step)
    write_results(tmp_path / "b", 5, 32, [2.0], 1.0, 10, controller={**every_step, "plan_freq": 2})
    with pytest.raises(TtrlError, match="different controller settings"):
        load_points([tmp_path])


def test_training_budgets_are_points_of_their_own(tmp_path):
    write_results(tmp_path / "4k", 5, 32, [10.0], 1.0, 10, steps=4000)
    write_results(tmp_path / "8k", 5, 32, [20.0], 1.0, 10, steps=8000)
    write_results(tmp_path / "8k-b8", 5, 8, [30.0], 1.0, 20, steps=8000)
    points = load_points([tmp_path])
    assert [(p.train_steps, p.beam_width, p.score_mean) for p in points] == [
        (4000, 32, 10.0),
        (8000, 8, 30.0),
        (8000, 32, 20.0),
    ]
    # two panels (cost and budget), with reference lines
    main([str(tmp_path), "--out", str(tmp_path / "out"), "--reference", "data average=15"])
    assert (tmp_path / "out" / "ablation.png").stat().st_size > 0


def test_references_parse_and_bad_ones_are_refused():
    assert parse_references(["data average=34.3", "BC=53.7"]) == {"data average": 34.3, "BC": 53.7}
    for bad in ("34.3", "=34.3", "data=high"):
        with pytest.raises(TtrlError, match="must be LABEL=SCORE"):
            parse_references([bad])
