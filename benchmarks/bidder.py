"""Benchmark of the budget-constrained bidders against the hindsight optimum, on three sources.

- `ipinyou`: the semi-real replay of iPinYou advertiser 2259 (`models.bidding.ipinyou_replay`): real
  requests and paid prices, clicks credited by a known click model, which is also the bidders' pCTR.
  Train days are those of `train.log.txt` (2013-10-19..21), test days those of `test.log.txt`
  (2013-10-22..25).
- `synthetic`: the stand-in generator (`models.bidding.synthetic`), 14 train days and 4 test days
  ending on the daylight-saving day 2026-03-29 in Europe/Berlin; bidders get the true click
  probability as pCTR, like the iPinYou replay, so this measures bidding alone.
- `synthetic_model`: the same days, but bidders use a calibrated LightGBM pCTR fitted on the train
  days' logged clicks, while won impressions are still credited with the true click probability:
  bidding and click model end to end. The DQN is the one trained for `synthetic` (its observations
  are normalised, so it does not depend on the pCTR's source); the lambda prior and the tuned
  baselines are refitted on the model's pCTR.

Policies: constant bid, linear bidding, best fixed lambda, PID pacing (all tuned on the train days
per budget fraction) and the DQN (trained on generated days from the train days), evaluated by
`training.evaluation.bidding.evaluate_bidding` at budgets of 1/2 .. 1/16 of each test day's
unconstrained spend.

    python -m benchmarks.bidder [--episodes 1000] [--json rows.json] [--figures DIR] [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import polars as pl

from models.bidding.auction import AuctionType
from models.bidding.baselines import (
    ConstantBid,
    FixedLambda,
    LambdaPrior,
    LinearBid,
    PIDPacing,
    reference_bid_value,
    tune_constant_bid,
    tune_linear_base_bid,
)
from models.bidding.click_model import ClickModel
from models.bidding.days import AuctionDay, days_from_frame
from models.bidding.dqn import DQNBidPolicy, DQNConfig, DQNTrainingResult, train_dqn
from models.bidding.ipinyou_replay import train_test_days
from models.bidding.synthetic import SyntheticMarket, generate_auctions
from training.evaluation.bidding import (
    ROW_KEYS,
    BiddingEvaluation,
    PolicyFactory,
    click_model_metrics,
    evaluate_bidding,
    format_table,
    learning_curve_figure,
    pacing_figure,
)

# the shared data folder lies beside the project root
DEFAULT_IPINYOU_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ipinyou-2259"
SYNTHETIC_TRAIN_START = dt.date(2026, 3, 12)
SYNTHETIC_TRAIN_DAYS = 14
SYNTHETIC_TEST_DAYS = 4  # 2026-03-26..29, the last a 23-hour day in Europe/Berlin
TARGET_PCT_OF_OPTIMUM = 90.0
TARGET_UPLIFT_OVER_LINEAR_PCT = 5.0
TIGHTEST_FRACTIONS = (1 / 8, 1 / 16)


@dataclass(frozen=True)
class BenchmarkSource:
    name: str
    train_days: list[AuctionDay]
    test_days: list[AuctionDay]
    click_model_metrics: dict[str, float] = field(default_factory=dict)


def ipinyou_source(folder: Path) -> BenchmarkSource:
    train, test = train_test_days(folder)
    return BenchmarkSource("ipinyou", train, test)


def synthetic_sources(market: SyntheticMarket, seed: int) -> tuple[BenchmarkSource, BenchmarkSource]:
    """The generated days twice: with the true click probability as pCTR, and with a click model's."""
    train_log = generate_auctions(market, SYNTHETIC_TRAIN_START, SYNTHETIC_TRAIN_DAYS, seed=seed)
    test_start = SYNTHETIC_TRAIN_START + dt.timedelta(days=SYNTHETIC_TRAIN_DAYS)
    test_log = generate_auctions(market, test_start, SYNTHETIC_TEST_DAYS, seed=seed + 1)

    def days(log: pl.DataFrame, pctr: pl.Series | None, credit_truth: bool) -> list[AuctionDay]:
        requests = log.with_columns(pctr=pctr if pctr is not None else pl.col("click_prob"))
        click_prob = "click_prob" if credit_truth else None
        return days_from_frame(requests, market.timezone, click_prob_column=click_prob, cpm_prices=True)

    oracle = BenchmarkSource("synthetic", days(train_log, None, False), days(test_log, None, True))
    model = ClickModel(market.timezone).fit(train_log)
    test_pctr = model.predict(test_log)
    metrics = click_model_metrics(test_log["click"].to_numpy(), test_pctr)
    truth = click_model_metrics(test_log["click"].to_numpy(), test_log["click_prob"].to_numpy())
    metrics |= {f"true_model_{name}": value for name, value in truth.items()}
    # train days credit the bidder's own pCTR: tuning sees nothing a real bidder would not have
    modelled = BenchmarkSource(
        "synthetic_model",
        days(train_log, pl.Series(model.predict(train_log)), False),
        days(test_log, pl.Series(test_pctr), True),
        metrics,
    )
    return oracle, modelled


def policy_factories(
    train_days: Sequence[AuctionDay], dqn: DQNTrainingResult, prior: LambdaPrior, auction_type: AuctionType
) -> dict[str, PolicyFactory]:
    """Each bidder, tuned on the train days for the budget fraction it is asked for."""
    reference = reference_bid_value(train_days)
    n_steps = dqn.config.n_steps
    return {
        "constant": lambda f: ConstantBid(tune_constant_bid(train_days, f, auction_type), n_steps),
        "linear": lambda f: LinearBid(tune_linear_base_bid(train_days, f, auction_type), reference, n_steps),
        "fixed_lambda": lambda f: FixedLambda(prior(f), n_steps),
        "pid": lambda f: PIDPacing(prior(f), n_steps=n_steps),
        "dqn": lambda f: DQNBidPolicy(dqn.weights, prior(f), dqn.config),
    }


@dataclass(frozen=True)
class SourceResult:
    source: BenchmarkSource
    evaluation: BiddingEvaluation
    dqn: DQNTrainingResult
    seconds: dict[str, float]


def run_source(
    source: BenchmarkSource, config: DQNConfig, dqn: DQNTrainingResult | None = None
) -> SourceResult:
    """Train the DQN on the source's train days (unless one is given) and evaluate every policy."""
    started = time.perf_counter()
    prior = LambdaPrior.fit(source.train_days)
    if dqn is None:
        dqn = train_dqn(source.train_days, prior, config)
    trained = time.perf_counter()
    policies = policy_factories(source.train_days, dqn, prior, config.auction_type)
    evaluation = evaluate_bidding(source.name, source.test_days, policies, auction_type=config.auction_type)
    evaluated = time.perf_counter()
    seconds = {"train_dqn": trained - started, "evaluate": evaluated - trained}
    return SourceResult(source, evaluation, dqn, seconds)


def summary_lines(result: SourceResult) -> list[str]:
    evaluation = result.evaluation
    name = result.source.name
    lines = [
        f"{name}: mean pct_of_optimum over budgets: "
        + ", ".join(
            f"{policy} {evaluation.mean_pct_of_optimum(policy):.1f}" for policy in evaluation.policies()
        )
    ]
    dqn_mean = evaluation.mean_pct_of_optimum("dqn")
    verdict = "met" if dqn_mean >= TARGET_PCT_OF_OPTIMUM else "MISSED"
    target = f"dqn >= {TARGET_PCT_OF_OPTIMUM:.0f}% of optimum on average"
    lines.append(f"{name}: target {target}: {dqn_mean:.1f} ({verdict})")
    for fraction in TIGHTEST_FRACTIONS:
        uplift = evaluation.uplift_pct("dqn", "linear", fraction)
        verdict = "met" if uplift >= TARGET_UPLIFT_OVER_LINEAR_PCT else "MISSED"
        target = f"dqn >= linear + {TARGET_UPLIFT_OVER_LINEAR_PCT:.0f}% at 1/{round(1 / fraction)}"
        lines.append(f"{name}: target {target}: {uplift:+.1f}% ({verdict})")
    dqn, seconds = result.dqn, result.seconds
    lines.append(
        f"{name}: dqn validation return {dqn.initial_validation_return:.1f} (untrained) -> "
        f"{dqn.best_validation_return:.1f} (best), fixed lambda {dqn.curve.fixed_lambda_return:.1f}; "
        f"train {seconds['train_dqn']:.0f} s, evaluate {seconds['evaluate']:.0f} s"
    )
    if result.source.click_model_metrics:
        m = result.source.click_model_metrics
        lines.append(
            f"{name}: click model on test days: AUC {m['auc']:.3f}, log loss {m['log_loss']:.4f}, "
            f"ECE {m['ece']:.5f} (true model: AUC {m['true_model_auc']:.3f}, "
            f"log loss {m['true_model_log_loss']:.4f}, ECE {m['true_model_ece']:.5f})"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ipinyou-dir", type=Path, default=DEFAULT_IPINYOU_DIR)
    parser.add_argument("--episodes", type=int, default=DQNConfig().episodes, help="DQN training episodes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny settings: a smoke run, not a result")
    parser.add_argument("--first-price", action="store_true", help="first-price auctions instead of second")
    parser.add_argument("--json", type=Path, help="write the table rows as JSON to this file")
    parser.add_argument("--figures", type=Path, help="save pacing and learning-curve PNGs in this folder")
    args = parser.parse_args(argv)

    auction_type = AuctionType.FIRST_PRICE if args.first_price else AuctionType.SECOND_PRICE
    config = DQNConfig(episodes=args.episodes, seed=args.seed, auction_type=auction_type)
    market = SyntheticMarket()
    if args.quick:
        config = replace(config, episodes=40, validation_every=20, validation_episodes=4)
        market = replace(market, requests_per_day=1500)

    sources: list[BenchmarkSource] = []
    if (args.ipinyou_dir / "train.log.txt").exists() and (args.ipinyou_dir / "test.log.txt").exists():
        sources.append(ipinyou_source(args.ipinyou_dir))
    else:
        print(f"iPinYou logs not found in {args.ipinyou_dir}: skipping the semi-real source", file=sys.stderr)
    sources.extend(synthetic_sources(market, args.seed))

    results: list[SourceResult] = []
    for source in sources:
        # synthetic_model reuses the agent trained on the same market's days (see the module docstring)
        reused = next((r.dqn for r in results if r.source.name == "synthetic"), None)
        reused = reused if source.name == "synthetic_model" else None
        action = "reusing the synthetic DQN" if reused else f"training the DQN ({config.episodes} episodes)"
        print(f"{source.name}: {action} ...", file=sys.stderr, flush=True)
        results.append(run_source(source, config, reused))

    rows = [row for result in results for row in result.evaluation.rows]
    print(format_table(rows))
    print()
    for result in results:
        print("\n".join(summary_lines(result)))
    if args.json:
        args.json.write_text(
            json.dumps([{key: row.as_dict()[key] for key in ROW_KEYS} for row in rows], indent=1)
        )
    if args.figures:
        args.figures.mkdir(parents=True, exist_ok=True)
        for result in results:
            name = result.source.name
            pacing_figure(result.evaluation, 1 / 8, day_index=-1).savefig(args.figures / f"{name}_pacing.png")
            learning_curve_figure(result.dqn.curve).savefig(args.figures / f"{name}_learning_curve.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
