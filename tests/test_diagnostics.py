"""python -m ttrl.evaluation.diagnostics: episodes aligned at their end, from predictions.csv."""

from __future__ import annotations

import csv

import pytest

from ttrl.errors import TtrlError
from ttrl.evaluation.diagnostics import main, plot_episode_ends, read_predictions


def write_csv(path, lengths):
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(
            ["episode", "step", "predicted_reward", "reward", "predicted_value", "value"]
        )
        for episode, length in enumerate(lengths):
            for step in reversed(range(length)):  # out of order on purpose
                writer.writerow([episode, step, step + 0.5, step, 10 * step + 1, 10 * step])


def test_episodes_are_read_in_step_order_and_only_early_ends_are_drawn(tmp_path):
    path = tmp_path / "predictions.csv"
    write_csv(path, [5, 1000, 3])
    episodes = read_predictions(path)
    assert sorted(episodes) == [0, 1, 2]
    assert list(episodes[0]["step"]) == [0, 1, 2, 3, 4]
    assert list(episodes[2]["predicted_value"]) == [1.0, 11.0, 21.0]
    out = plot_episode_ends(episodes, tmp_path / "ends.png", last=4)
    assert out.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(TtrlError, match="no episode ended before the time limit of 5 steps"):
        plot_episode_ends({0: episodes[0]}, tmp_path / "x.png", time_limit=5)
    main([str(path), str(tmp_path / "cli.png")])
    assert (tmp_path / "cli.png").stat().st_size > 0


def test_a_file_that_is_not_predictions_is_one_line(tmp_path):
    (tmp_path / "results.csv").write_text("episode,return\n0,1.0\n")
    with pytest.raises(TtrlError, match=r"is not an evaluation's predictions\.csv"):
        read_predictions(tmp_path / "results.csv")
    with pytest.raises(TtrlError, match="cannot read"):
        read_predictions(tmp_path / "missing.csv")
