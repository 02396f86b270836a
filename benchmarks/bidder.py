"""Benchmark of the budget-constrained bidders against the hindsight optimum, on two sources.

- `synthetic`: the simulator's world in the data folder (made by `tradewind demo`), through the
  bidding family exactly as `tradewind train bidder` runs it (training/bidder/): the contract
  tables, FX to one currency, Feast context, the calibrated LightGBM click model as the bidders'
  pCTR, baselines tuned per campaign on its training days, one DQN for all campaigns, and every
  campaign's latest days held out. Won impressions are credited with the simulator's true click
  probability (its ground truth), so the click model's errors cost what they would cost for real.
- `ipinyou`: the semi-real replay of iPinYou advertiser 2259 (`models.bidding.ipinyou_replay`): real
  requests and paid prices, clicks credited by a known click model, which is also the bidders' pCTR.
  Train days are those of `train.log.txt` (2013-10-19..21), test days those of `test.log.txt`
  (2013-10-22..25). The DQN is the same design (pacing mode, configs/bidder.yaml's `dqn`).

Policies: constant bid, linear bidding, best fixed lambda, PID pacing (tuned on the train days per
budget fraction) and the DQN, evaluated by `training.evaluation.bidding.evaluate_bidding` at budgets
of 1/2 .. 1/16 of each test day's unconstrained spend, beside the hindsight optimum.

    tradewind benchmark bidder [--episodes 1000] [--seed 0] [--sources synthetic,ipinyou]
                               [--json rows.json] [--figures DIR] [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
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
from models.bidding.days import AuctionDay
from models.bidding.dqn import DQNBidPolicy, DQNConfig, train_dqn
from models.bidding.ipinyou_replay import train_test_days
from models.bidding.learning_curve import LearningCurve
from training.bidder.evaluate import TIGHTEST_FRACTIONS
from training.evaluation.bidding import (
    ROW_KEYS,
    BiddingEvaluation,
    BiddingRow,
    PolicyFactory,
    evaluate_bidding,
    format_table,
    learning_curve_figure,
    pacing_figure,
)
from training.evaluation.intervals import Interval, bootstrap, ratio_interval

# the shared data folder lies beside the project root
DEFAULT_IPINYOU_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ipinyou-2259"
SOURCES = ("synthetic", "ipinyou")
FULL_EPISODES = 1000
TARGET_PCT_OF_OPTIMUM = 90.0
TARGET_UPLIFT_OVER_LINEAR_PCT = 5.0
LATENCY_REQUESTS = 2000


@dataclass(frozen=True)
class SourceResult:
    name: str
    evaluation: BiddingEvaluation
    curve: LearningCurve
    seconds: dict[str, float]
    click_metrics: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def run_synthetic(
    data_dir: Path | None,
    config_path: Path | None,
    dqn_overrides: Mapping[str, int],
    seed: int,
    quick: bool,
    auction_type: AuctionType,
) -> SourceResult:
    """The simulator's world through the bidding family, as `tradewind train bidder` runs it."""
    from configs.settings import Settings, load_settings
    from training.bidder.data import training_set
    from training.bidder.evaluate import click_metrics, evaluate_policies
    from training.bidder.family import FAMILY
    from training.bidder.fit import fit
    from training.pipeline import load_family_config

    settings = Settings(data_dir=data_dir) if data_dir else load_settings()
    config = load_family_config(FAMILY, config_path)
    dqn: dict[str, int] = dict(dqn_overrides)
    if quick:
        dqn |= {"validation_every": 20, "validation_episodes": 4}
    config = config.model_copy(
        update={
            "seed": seed,
            "dqn": config.dqn.model_copy(update=dqn),
            "evaluation": config.evaluation.model_copy(update={"auction_type": auction_type}),
        }
    )
    started = time.perf_counter()
    data_set = training_set(settings, config)
    loaded = time.perf_counter()
    trained = fit(data_set, config, {}, None)
    fitted = time.perf_counter()
    model = trained.python_model.served  # type: ignore[attr-defined]
    evaluation = evaluate_policies(model, data_set.data, config, source="synthetic")
    evaluated = time.perf_counter()
    seconds = {"training_set": loaded - started, "fit": fitted - loaded, "evaluate": evaluated - fitted}
    summary = data_set.summary
    notes = [
        f"synthetic: {summary['campaigns']} campaigns, {summary['train_days']} train and "
        f"{summary['test_days']} held-out campaign-days, {summary['requests']} requests; click model on "
        f"{summary['click_model_impressions']} impressions ({summary['click_model_clicks']} clicks)",
        _latency_line(model, data_set.data),
    ]
    return SourceResult(
        "synthetic", evaluation, model.curve, seconds, click_metrics(model, data_set.data), notes
    )


def _latency_line(model: object, data: object) -> str:
    """Median and 99th percentile of the served model's `answer` on held-out requests, in process."""
    from models.bidding.served import ServedBidder
    from training.bidder.data import BiddingData

    assert isinstance(model, ServedBidder) and isinstance(data, BiddingData)
    rows = data.requests.filter(pl.col("role") == "test").head(LATENCY_REQUESTS)
    requests = []
    for row in rows.iter_rows(named=True):
        info = data.campaigns[row["campaign_id"]]
        requests.append(
            {
                "campaign_id": row["campaign_id"],
                "state": {
                    "budget": info.daily_budget,
                    "spent": info.daily_budget / 3,
                    "time_fraction": 0.4,
                    "recent_win_rate": 0.3,
                    "recent_cpc": 0.0,
                    "recent_ctr": 0.0,
                },
                "request": {
                    "hour": row["hour"],
                    "weekday": row["weekday"],
                    "exchange": row["exchange"],
                    "slot": row["slot_id"],
                    "slot_width": row["slot_width"],
                    "slot_height": row["slot_height"],
                    "region": row["region"],
                    "floor_price": row["floor_price"] / info.to_target,
                    "known_user": bool(row["known_user"]),
                },
            }
        )
    if not requests:
        return "synthetic: no held-out request to time the served model on"
    model.answer(requests[0])  # the first call makes the booster's single-row handle
    times = []
    for request in requests:
        started = time.perf_counter()
        model.answer(request)
        times.append(time.perf_counter() - started)
    micros = np.asarray(times) * 1e6
    return (
        f"synthetic: served answer() in process over {len(requests)} held-out requests: median "
        f"{np.median(micros):.0f} us, p99 {np.quantile(micros, 0.99):.0f} us"
    )


def ipinyou_policies(
    train_days: Sequence[AuctionDay], weights: object, config: DQNConfig, prior: LambdaPrior
) -> dict[str, PolicyFactory]:
    reference = reference_bid_value(train_days)
    n_steps, auction_type = config.n_steps, config.auction_type
    return {
        "constant": lambda f: ConstantBid(tune_constant_bid(train_days, f, auction_type), n_steps),
        "linear": lambda f: LinearBid(tune_linear_base_bid(train_days, f, auction_type), reference, n_steps),
        "fixed_lambda": lambda f: FixedLambda(prior(f), n_steps),
        "pid": lambda f: PIDPacing(prior(f), n_steps=n_steps),
        "dqn": lambda f: DQNBidPolicy(weights, prior(f), config),  # type: ignore[arg-type]
    }


def run_ipinyou(
    folder: Path,
    config_path: Path | None,
    dqn_overrides: Mapping[str, int],
    seed: int,
    quick: bool,
    auction_type: AuctionType,
) -> SourceResult:
    from training.bidder.family import FAMILY
    from training.bidder.fit import dqn_config
    from training.pipeline import load_family_config

    config = load_family_config(FAMILY, config_path)
    config = config.model_copy(
        update={
            "seed": seed,
            "evaluation": config.evaluation.model_copy(update={"auction_type": auction_type}),
        }
    )
    agent = replace(dqn_config(config, {}), **dqn_overrides)
    if quick:
        agent = replace(agent, validation_every=20, validation_episodes=4)
    started = time.perf_counter()
    train, test = train_test_days(folder)
    prior = LambdaPrior.fit(train)
    result = train_dqn(train, prior, agent)
    trained = time.perf_counter()
    evaluation = evaluate_bidding(
        "ipinyou",
        test,
        ipinyou_policies(train, result.weights, agent, prior),
        budget_fractions=config.evaluation.budget_fractions,
        auction_type=auction_type,
        replay=config.evaluation.replay,
    )
    seconds = {"fit": trained - started, "evaluate": time.perf_counter() - trained}
    notes = [
        f"ipinyou: {len(train)} train days, {len(test)} test days, "
        f"{sum(day.n_requests for day in test)} test requests"
    ]
    return SourceResult("ipinyou", evaluation, result.curve, seconds, notes=notes)


def row_intervals(evaluation: BiddingEvaluation) -> list[Interval]:
    """pct_of_optimum's 95% interval of each row, over the held-out campaign-days (value and
    hindsight bound resampled on the same days)."""
    return [
        ratio_interval(*evaluation.day_values(row.budget_fraction, row.policy), scale=100.0)
        for row in evaluation.rows
    ]


def mean_pct_interval(evaluation: BiddingEvaluation, policy: str) -> Interval:
    """The interval of pct_of_optimum averaged over the budget fractions, every fraction drawing the
    same days."""
    pairs = [evaluation.day_values(fraction, policy) for fraction in evaluation.budget_fractions()]

    def mean_pct(draws: np.ndarray) -> np.ndarray:
        return np.mean([100.0 * v[draws].sum(axis=1) / b[draws].sum(axis=1) for v, b in pairs], axis=0)

    return bootstrap(mean_pct, len(pairs[0][0]))


def uplift_interval(evaluation: BiddingEvaluation, policy: str, baseline: str, fraction: float) -> Interval:
    """The interval of `policy`'s uplift in value over `baseline` (percent), on the same days."""
    values, _ = evaluation.day_values(fraction, policy)
    base, _ = evaluation.day_values(fraction, baseline)
    ratio = ratio_interval(values, base, scale=100.0)
    return Interval(ratio.low - 100.0, ratio.high - 100.0, ratio.n)


def summary_lines(result: SourceResult) -> list[str]:
    """Means over budgets and the targets, each with its interval; a target is judged on the
    figure itself and a miss is printed as MISSED whatever the interval."""
    evaluation, name = result.evaluation, result.name
    lines = [
        f"{name}: mean pct_of_optimum over budgets: "
        + ", ".join(
            f"{policy} {evaluation.mean_pct_of_optimum(policy):.1f}" for policy in evaluation.policies()
        )
    ]
    dqn_mean = evaluation.mean_pct_of_optimum("dqn")
    interval = mean_pct_interval(evaluation, "dqn")
    verdict = "met" if dqn_mean >= TARGET_PCT_OF_OPTIMUM else "MISSED"
    lines.append(
        f"{name}: target dqn >= {TARGET_PCT_OF_OPTIMUM:.0f}% of optimum on average: "
        f"{dqn_mean:.1f}, 95% CI [{interval.low:.1f}, {interval.high:.1f}] over {interval.n} "
        f"campaign-days ({verdict})"
    )
    for fraction in TIGHTEST_FRACTIONS:
        uplift = evaluation.uplift_pct("dqn", "linear", fraction)
        interval = uplift_interval(evaluation, "dqn", "linear", fraction)
        verdict = "met" if uplift >= TARGET_UPLIFT_OVER_LINEAR_PCT else "MISSED"
        lines.append(
            f"{name}: target dqn >= linear + {TARGET_UPLIFT_OVER_LINEAR_PCT:.0f}% at "
            f"1/{round(1 / fraction)}: {uplift:+.1f}%, 95% CI [{interval.low:+.1f}, {interval.high:+.1f}] "
            f"({verdict})"
        )
    curve = result.curve
    lines.append(
        f"{name}: dqn validation return {curve.validation_returns[0]:.1f} (untrained) -> "
        f"{max(curve.validation_returns):.1f} (best), fixed lambda {curve.fixed_lambda_return:.1f}; "
        + ", ".join(f"{step} {seconds:.0f} s" for step, seconds in result.seconds.items())
    )
    for model, metrics in result.click_metrics.items():
        auc = f"AUC {metrics['auc']:.3f}, " if "auc" in metrics else ""
        lines.append(
            f"{name}: {model.replace('_', ' ')} on held-out won impressions: {auc}log loss "
            f"{metrics['log_loss']:.4f}, ECE {metrics['ece']:.5f}"
        )
    return lines + result.notes


def json_row(row: BiddingRow, interval: Interval) -> dict[str, object]:
    """A table row with the days behind it and pct_of_optimum's interval."""
    return {
        **{key: row.as_dict()[key] for key in ROW_KEYS},
        **interval.as_dict(),
        "n_of": "campaign-days",
        "ci95_of": "pct_of_optimum",
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources", default=",".join(SOURCES), help="comma-separated: synthetic, ipinyou")
    parser.add_argument("--data-dir", type=Path, help="the simulator's data folder (default: the platform's)")
    parser.add_argument("--ipinyou-dir", type=Path, default=DEFAULT_IPINYOU_DIR)
    parser.add_argument("--config", type=Path, help="bidder config (default: configs/bidder.yaml)")
    parser.add_argument("--episodes", type=int, default=FULL_EPISODES, help="DQN training episodes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--validation-holdout-days",
        type=int,
        help="training days the DQN only validates on (default: the config's dqn.validation_holdout_days)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny settings: a smoke run, not a result")
    parser.add_argument("--first-price", action="store_true", help="first-price auctions instead of second")
    parser.add_argument("--json", type=Path, help="write the table rows as JSON to this file")
    parser.add_argument("--figures", type=Path, help="save pacing and learning-curve PNGs in this folder")
    args = parser.parse_args(argv)

    sources = [name.strip() for name in args.sources.split(",") if name.strip()]
    unknown = sorted(set(sources) - set(SOURCES))
    if unknown:
        print(f"error: --sources: unknown {unknown} (known: {', '.join(SOURCES)})", file=sys.stderr)
        return 2
    auction_type = AuctionType.FIRST_PRICE if args.first_price else AuctionType.SECOND_PRICE
    episodes = 40 if args.quick else args.episodes
    overrides = {"episodes": episodes}
    if args.validation_holdout_days is not None:
        overrides["validation_holdout_days"] = args.validation_holdout_days
    results: list[SourceResult] = []
    for name in sources:
        if name == "ipinyou" and not (
            (args.ipinyou_dir / "train.log.txt").exists() and (args.ipinyou_dir / "test.log.txt").exists()
        ):
            print(
                f"iPinYou logs not found in {args.ipinyou_dir}: skipping the semi-real source",
                file=sys.stderr,
            )
            continue
        print(
            f"{name}: training the DQN ({episodes} episodes) and evaluating ...", file=sys.stderr, flush=True
        )
        if name == "synthetic":
            results.append(
                run_synthetic(args.data_dir, args.config, overrides, args.seed, args.quick, auction_type)
            )
        else:
            results.append(
                run_ipinyou(args.ipinyou_dir, args.config, overrides, args.seed, args.quick, auction_type)
            )

    rows = [row for result in results for row in result.evaluation.rows]
    intervals = [interval for result in results for interval in row_intervals(result.evaluation)]
    print(format_table(rows, intervals))
    print()
    for result in results:
        print("\n".join(summary_lines(result)))
    if args.json:
        args.json.write_text(
            json.dumps(
                [json_row(row, interval) for row, interval in zip(rows, intervals, strict=True)], indent=1
            )
        )
    if args.figures:
        args.figures.mkdir(parents=True, exist_ok=True)
        for result in results:
            pacing_figure(result.evaluation, 1 / 8, day_index=-1).savefig(
                args.figures / f"{result.name}_pacing.png"
            )
            learning_curve_figure(result.curve).savefig(args.figures / f"{result.name}_learning_curve.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
