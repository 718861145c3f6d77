"""Benchmarks that print one JSON line each: ``python scripts/bench.py {train,plan} [options]``."""

from __future__ import annotations

import argparse
import json

from ttrl.cli import exit_on_user_error


def add_train_command(subparsers: argparse._SubParsersAction) -> None:
    """``train``: tokens/s of forward+backward+AdamW steps, and the ratio to the transformers port."""
    train = subparsers.add_parser("train", help="training tokens/s, vs the transformers port")
    train.add_argument("--env", default="halfcheetah", help="sizes of this env's model")
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument("--steps", type=int, default=20, help="timed steps (per model)")
    train.add_argument("--warmup", type=int, default=3, help="untimed steps before timing")
    train.add_argument("--device", default="cpu", help="cpu or cuda")
    train.add_argument("--compile", action="store_true", help="torch.compile ttrl's model")
    train.add_argument("--bf16", action="store_true", help="bf16 autocast (both models)")
    train.add_argument("--no-hf", action="store_true", help="skip timing the transformers port")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    train.add_argument(
        "--breakdown",
        action="store_true",
        help="also profile ms/step by kind of op (matmul, dropout masks, softmax, other); CPU only",
    )
    train.set_defaults(run=run_train)


def run_train(args: argparse.Namespace) -> dict:
    from ttrl.model.bench import benchmark_training

    return benchmark_training(
        env=args.env,
        batch_size=args.batch_size,
        steps=args.steps,
        warmup=args.warmup,
        device=args.device,
        compile=args.compile,
        bf16=args.bf16,
        compare_hf=not args.no_hf,
        seed=args.seed,
        threads=args.threads,
        breakdown=args.breakdown,
    )


def add_plan_command(subparsers: argparse._SubParsersAction) -> None:
    """``plan``: milliseconds per decision of the cached and the uncached beam-search planner, or
    of the cached planner of another commit (``--baseline``), and the model's multiply-adds."""
    plan = subparsers.add_parser(
        "plan", help="planner ms per decision, cached vs uncached or vs another commit"
    )
    plan.add_argument("--env", default="halfcheetah", help="sizes of this env's model")
    plan.add_argument("--horizon", type=int, default=5)
    plan.add_argument("--beam-width", type=int, default=32)
    plan.add_argument("--n-expand", type=int, default=2)
    plan.add_argument("--context", type=int, default=5, help="context transitions")
    plan.add_argument(
        "--decisions",
        type=int,
        default=3,
        help="timed cached decisions (with --baseline: per version and round)",
    )
    plan.add_argument(
        "--uncached-decisions",
        type=int,
        default=None,
        help="timed uncached decisions (0: skip; default 1, or 0 with --baseline)",
    )
    plan.add_argument("--seed", type=int, default=0)
    plan.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: torch's, or 1 per version with --baseline)",
    )
    plan.add_argument(
        "--baseline",
        metavar="REF",
        default=None,
        help="instead of the uncached planner, time the planner of this git ref (main~5, HEAD, a "
        "commit) in its own process, in turns with the current one on the same inputs",
    )
    plan.add_argument(
        "--rounds", type=int, default=5, help="with --baseline: turns each version takes"
    )
    plan.add_argument(
        "--n-envs", type=int, default=1, help="episodes planned together in one batch"
    )
    plan.add_argument("--device", default="cpu", help="cpu or cuda")
    plan.set_defaults(run=run_plan)


def run_plan(args: argparse.Namespace) -> dict:
    from ttrl.errors import TtrlError
    from ttrl.planning.bench import benchmark_planner, compare_with_baseline

    if args.baseline is not None:
        if args.uncached_decisions:
            raise TtrlError("--baseline times cached planners only; drop --uncached-decisions")
        return compare_with_baseline(
            args.baseline,
            env=args.env,
            horizon=args.horizon,
            beam_width=args.beam_width,
            n_expand=args.n_expand,
            context=args.context,
            decisions=args.decisions,
            rounds=args.rounds,
            seed=args.seed,
            threads=args.threads or 1,
            n_envs=args.n_envs,
            device=args.device,
        )
    return benchmark_planner(
        env=args.env,
        horizon=args.horizon,
        beam_width=args.beam_width,
        n_expand=args.n_expand,
        context=args.context,
        decisions=args.decisions,
        uncached_decisions=1 if args.uncached_decisions is None else args.uncached_decisions,
        seed=args.seed,
        threads=args.threads,
        n_envs=args.n_envs,
        device=args.device,
    )


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_train_command(subparsers)
    add_plan_command(subparsers)
    args = parser.parse_args(argv)
    print(json.dumps(args.run(args)))


if __name__ == "__main__":
    main()
