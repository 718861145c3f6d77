"""scripts/report.py and ttrl.evaluation.table on hand-written results.json files, checked by hand."""

from __future__ import annotations

import csv
import json
import math
import runpy
from pathlib import Path

import pytest

from ttrl.errors import TtrlError
from ttrl.evaluation.table import find_results, load_evaluation, summarize, to_markdown

ROOT = Path(__file__).resolve().parents[1]

# hopper-medium: 3 seeds x 3 episodes. By hand:
#   all 9 episodes: mean 540/9 = 60, squared deviations sum 2800, var 2800/8 = 350, se sqrt(350)/3
#   seed means 60, 40, 80: mean 60, var (0 + 400 + 400)/2 = 400, se 20/sqrt(3)
HOPPER = {0: [50.0, 60.0, 70.0], 1: [40.0, 40.0, 40.0], 2: [90.0, 80.0, 70.0]}
# a dataset without a paper number, one seed: mean 15, se sqrt(50)/sqrt(2) = 5, seed se undefined
OTHER = {7: [10.0, 20.0]}


def write_results(path: Path, dataset: str, seed: int | None, scores: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    train_config = {} if seed is None else {"seed": seed, "env": {"name": dataset}}
    episodes = [{"episode": i, "normalized_score": s} for i, s in enumerate(scores)]
    results = {"dataset": dataset, "episodes": episodes, "config": {"train_config": train_config}}
    path.write_text(json.dumps(results))


@pytest.fixture
def sweep(tmp_path):
    """A sweep dir laid out as scripts/train.py -m writes it, with plan/final/results.json per job."""
    root = tmp_path / "sweep"
    for job, (seed, scores) in enumerate(HOPPER.items()):
        write_results(
            root / f"{job}-hopper-medium-s{seed}/plan/final/results.json",
            "hopper-medium",
            seed,
            scores,
        )
    for seed, scores in OTHER.items():
        write_results(
            root / f"3-mine-s{seed}/plan/final/results.json",
            "mujoco/hopper/medium-v0",
            seed,
            scores,
        )
    # a second evaluation of seed 0 under another name, and one without reference scores
    write_results(root / "0-hopper-medium-s0/plan/extra/results.json", "hopper-medium", 0, [0.0])
    write_results(root / "4-x-s0/plan/final/results.json", "x/y/z-v0", 0, [None, None])
    return root


def test_summaries_match_the_hand_computation(sweep):
    with pytest.warns(UserWarning, match="no normalised scores"):
        evaluations = [load_evaluation(p) for p in find_results([sweep], name="final")]
    rows = summarize([e for e in evaluations if e is not None])
    assert [r.dataset for r in rows] == ["hopper-medium", "mujoco/hopper/medium-v0"]
    hopper, other = rows
    assert sorted(hopper.seeds) == [0, 1, 2] and hopper.n_episodes == 9
    assert hopper.episode_mean == pytest.approx(60.0)
    assert hopper.episode_se == pytest.approx(math.sqrt(350.0) / 3)
    assert hopper.seed_mean == pytest.approx(60.0)
    assert hopper.seed_se == pytest.approx(20.0 / math.sqrt(3))
    assert (hopper.paper_mean, hopper.paper_se) == (61.1, 3.6)
    assert other.seeds == [7] and other.n_episodes == 2
    assert (other.episode_mean, other.episode_se) == pytest.approx((15.0, 5.0))
    assert other.seed_mean == pytest.approx(15.0) and math.isnan(other.seed_se)
    assert other.paper_mean is None
    table = to_markdown(rows)
    assert "| hopper-medium | 3 (0,1,2) | 9 | 60.0 ± 6.2 | 60.0 ± 11.5 | 61.1 ± 3.6 |" in table
    assert "| mujoco/hopper/medium-v0 | 1 (7) | 2 | 15.0 ± 5.0 | 15.0 ± n/a | - |" in table


def test_paper_numbers_for_d4rl_names_and_d4rl_v2_hdf5_files():
    from ttrl.evaluation.table import paper_dataset

    assert paper_dataset("hopper-medium") == "hopper-medium"
    assert (
        paper_dataset("/data/d4rl/halfcheetah_medium_replay-v2.hdf5") == "halfcheetah-medium-replay"
    )
    assert paper_dataset("/data/d4rl/walker2d_medium_expert-v2.hdf5") == "walker2d-medium-expert"
    assert paper_dataset("/data/d4rl/hopper_medium-v0.hdf5") is None  # another D4RL version
    assert paper_dataset("mujoco/hopper/medium-v0") is None  # Minari's datasets are not D4RL's
    assert paper_dataset("hopper-random") is None  # no number in the paper


def test_two_evaluations_of_one_seed_are_flagged(sweep):
    with pytest.warns(UserWarning):
        evaluations = [load_evaluation(p) for p in find_results([sweep])]
    with pytest.warns(UserWarning, match="same training seed"):
        rows = summarize([e for e in evaluations if e is not None])
    assert rows[0].n_seeds == 4 and rows[0].n_episodes == 10


def test_missing_or_empty_dirs_are_one_line_errors(tmp_path):
    with pytest.raises(TtrlError, match="does not exist"):
        find_results([tmp_path / "nope"])
    with pytest.raises(TtrlError, match=r"evaluate\.n_episodes"):
        find_results([tmp_path])


def report_main(*args: str) -> None:
    """scripts/report.py's main, in this process (a subprocess would only add its start-up)."""
    runpy.run_path(str(ROOT / "scripts" / "report.py"))["main"](list(args))


def test_report_script_writes_markdown_csv_and_png(sweep, tmp_path, capsys):
    out = tmp_path / "report"
    with pytest.warns(UserWarning, match="no normalised scores"):
        report_main(str(sweep), "--name", "final", "--out", str(out), "--no-data-average")
    printed = capsys.readouterr().out
    assert "| hopper-medium | 3 (0,1,2) | 9 |" in printed
    assert "| hopper-medium | - | - | - | 60.0 ± 6.2 (3x3) | 61.1 ± 3.6 | 63.9 |" in printed
    with open(out / "report.csv") as f:
        rows = {r["dataset"]: r for r in csv.DictReader(f)}
    assert float(rows["hopper-medium"]["seed_se"]) == pytest.approx(20.0 / math.sqrt(3))
    assert rows["hopper-medium"]["paper_tt_quantile_mean"] == "61.1"
    assert rows["mujoco/hopper/medium-v0"]["seed_se"] == ""
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "report.md").read_text().startswith("| dataset |")


def test_report_script_error_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        report_main(str(tmp_path))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and err.startswith("error: no results.json")


def test_comparison_puts_the_data_average_bc_and_tt_side_by_side(tmp_path):
    """A D4RL v2 HDF5 file of hopper with known returns: its data average by hand, beside TT's and
    BC's rows of the same dataset and the paper's TT and BC numbers."""
    import numpy as np

    from ttrl.data.loading import make_transitions, write_d4rl_hdf5
    from ttrl.evaluation.table import compare, comparison_csv, comparison_markdown, plot_comparison

    # three episodes: rewards sum to 1000 (terminated), 2000 (time limit of 4 steps), and a last
    # one of 2 steps cut by the data's end, which does not count
    rewards = np.array([250.0] * 4 + [500.0] * 4 + [7.0, 7.0])
    terminals = np.zeros(10, bool)
    terminals[3] = True
    timeouts = np.zeros(10, bool)
    timeouts[7] = timeouts[9] = True
    transitions = make_transitions(
        np.zeros((10, 11)), np.zeros((10, 3)), rewards, terminals, timeouts
    )
    path = write_d4rl_hdf5(tmp_path / "hopper_medium-v2.hdf5", transitions)
    lo, hi = -20.272305, 3234.3
    scores = [100 * (r - lo) / (hi - lo) for r in (1000.0, 2000.0)]
    from ttrl.data.summary import dataset_score

    score = dataset_score(str(path), time_limit=4)
    assert score.n_episodes == 2
    assert score.normalized_mean == pytest.approx(np.mean(scores))
    assert score.normalized_se == pytest.approx(np.std(scores, ddof=1) / math.sqrt(2))

    for agent, seed, values in (
        ("tt", 0, [50.0, 70.0]),
        ("tt", 1, [60.0, 60.0]),
        ("bc", 0, [40.0, 44.0]),
    ):
        file = tmp_path / f"{agent}{seed}" / "results.json"
        write_results(file, str(path), seed, values)
        document = json.loads(file.read_text())
        file.write_text(json.dumps({**document, "agent": agent}))
    rows = summarize([load_evaluation(p) for p in find_results([tmp_path])])
    (row,) = compare(rows, lambda name: dataset_score(name, time_limit=4))
    assert row.data_mean == pytest.approx(score.normalized_mean)
    assert row.agents["tt"].episode_mean == pytest.approx(60.0)
    assert row.agents["bc"].episode_mean == pytest.approx(42.0)
    assert row.paper_tt == (61.1, 3.6) and row.paper_bc == 63.9
    table = comparison_markdown([row])
    assert f"| {np.mean(scores):.1f} ± " in table and "| 60.0 ± 4.1 (2x2) |" in table
    assert "| 42.0 ± 2.0 (1x2) | - | 60.0" in table  # BC, no IQL, then TT
    (csv_row,) = list(csv.DictReader(comparison_csv([row]).splitlines()))
    assert (
        float(csv_row["bc_mean"]) == 42.0
        and csv_row["iql_mean"] == ""
        and csv_row["paper_bc"] == "63.9"
    )
    assert plot_comparison([row], tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def write_goal_results(path: Path, agent: str, seed: int, successes: list[bool]) -> None:
    """A goal evaluation's results.json as plan.py and train_baseline.py write it: no normalised
    scores, a success per episode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    episodes = [
        {"episode": i, "normalized_score": None, "success": s} for i, s in enumerate(successes)
    ]
    config = {"train_config": {"seed": seed, "env": {"name": "pointmaze-umaze"}}}
    path.write_text(
        json.dumps(
            {"dataset": "pointmaze-umaze", "episodes": episodes, "config": config, "agent": agent}
        )
    )


def test_goal_evaluations_are_tabulated_by_success_rate(tmp_path):
    from ttrl.evaluation.table import compare, goal_comparison_markdown, write_report

    # TT: seeds 0 and 1, 3 + 1 of 4 episodes: 4/8 = 50 %, se = 100 * sqrt(0.25 * 8/7 / 8)
    write_goal_results(tmp_path / "tt0/results.json", "tt", 0, [True, True, True, False])
    write_goal_results(tmp_path / "tt1/results.json", "tt", 1, [False, False, True, False])
    write_goal_results(tmp_path / "w/results.json", "waypoint", 0, [True] * 4)
    rows = summarize([load_evaluation(p) for p in find_results([tmp_path])])
    by_agent = {row.agent: row for row in rows}
    assert set(by_agent) == {"tt", "waypoint"}
    assert by_agent["tt"].episode_mean == pytest.approx(50.0)
    assert by_agent["tt"].episode_se == pytest.approx(100 * math.sqrt(0.25 * 8 / 7 / 8))
    assert by_agent["tt"].seed_mean == pytest.approx(50.0)  # seeds at 75 and 25
    assert by_agent["waypoint"].label == "pointmaze-umaze [waypoint] (success %)"
    assert compare(rows, lambda name: None) == []  # not in the normalised-score comparison
    table = goal_comparison_markdown(rows)
    assert "| pointmaze-umaze | 50.0 ± 18.9 (2x4) | - | 100.0 ± 0.0 (1x4) |" in table
    written = write_report(rows, tmp_path / "out")
    assert table in written["markdown"].read_text()
    assert "success %" in written["csv"].read_text()


def test_success_and_score_results_of_one_agent_are_refused(tmp_path):
    write_goal_results(tmp_path / "a/results.json", "tt", 0, [True])
    write_results(tmp_path / "b/results.json", "pointmaze-umaze", 1, [10.0])
    with pytest.raises(TtrlError, match="report them apart"):
        summarize([load_evaluation(p) for p in find_results([tmp_path])])
