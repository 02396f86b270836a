"""Bidding evaluation: click-model metrics, the held-out protocol against the hindsight optimum, figures."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from matplotlib.figure import Figure

from models.bidding.auction import is_within_budget
from models.bidding.baselines import ConstantBid, FixedLambda, LambdaPrior, PIDPacing
from models.bidding.days import AuctionDay, budget_for, unconstrained_spend
from models.bidding.learning_curve import LearningCurve
from models.bidding.replay import replay_requests
from training.evaluation.bidding import (
    BUDGET_FRACTIONS,
    OPTIMUM_POLICY,
    ROW_KEYS,
    click_model_metrics,
    evaluate_bidding,
    expected_calibration_error,
    format_table,
    learning_curve_figure,
    pacing_figure,
)

STEPS = 12


def make_day(seed: int, n_requests: int = 300) -> AuctionDay:
    rng = np.random.default_rng(seed)
    quality = rng.normal(0.0, 1.0, n_requests)
    pctr = 1 / (1 + np.exp(-(-3.5 + 0.5 * quality)))
    return AuctionDay(
        date=dt.date(2026, 2, 1) + dt.timedelta(days=seed),
        time_of_day=np.sort(rng.uniform(0, 1, n_requests)),
        market_price=np.exp(0.3 * quality + rng.normal(0.0, 0.5, n_requests)),
        floor_price=np.zeros(n_requests),
        pctr=pctr,
        value=np.ones(n_requests),
        click_prob=pctr,
    )


def test_ece_of_a_perfectly_calibrated_prediction_is_about_zero() -> None:
    rng = np.random.default_rng(0)
    probabilities = rng.beta(1.0, 30.0, 400_000)  # click-like rates around 3%
    labels = rng.random(400_000) < probabilities
    assert expected_calibration_error(labels, probabilities) < 0.001
    # twice the true rate is badly calibrated: the ECE is about the mean rate itself
    assert expected_calibration_error(labels, 2 * probabilities) > 0.02


def test_ece_of_a_hand_computed_case() -> None:
    # two bins of two: predictions 0.1, 0.1 with labels 0, 1 (gap 0.4); 0.8, 0.8 with 1, 1 (gap 0.2)
    labels = np.array([0, 1, 1, 1])
    probabilities = np.array([0.1, 0.1, 0.8, 0.8])
    assert expected_calibration_error(labels, probabilities, n_bins=2) == pytest.approx(0.5 * 0.4 + 0.5 * 0.2)


def test_click_model_metrics() -> None:
    labels = np.array([0, 0, 1, 1])
    metrics = click_model_metrics(labels, np.array([0.1, 0.2, 0.7, 0.9]))
    assert metrics["auc"] == 1.0
    expected_loss = -np.mean(np.log([0.9, 0.8, 0.7, 0.9]))
    assert metrics["log_loss"] == pytest.approx(expected_loss)
    assert metrics["observed_rate"] == 0.5
    assert click_model_metrics(labels, np.array([0.9, 0.7, 0.2, 0.1]))["auc"] == 0.0


def test_unconstrained_spend_is_what_a_constant_high_bid_pays() -> None:
    day = make_day(1)
    high_bid = ConstantBid(float(day.price_to_beat.max()) * 1.01, STEPS)
    run = replay_requests(high_bid, day, budget=1e9)
    assert run.wins == day.n_requests
    assert run.spend == pytest.approx(unconstrained_spend(day))


def test_evaluation_rows_bounds_and_metrics() -> None:
    train = [make_day(seed) for seed in range(3)]
    test = [make_day(seed) for seed in range(3, 5)]
    prior = LambdaPrior.fit(train)
    policies = {
        "constant": lambda fraction: ConstantBid(float(np.median(train[0].price_to_beat)), STEPS),
        "fixed_lambda": lambda fraction: FixedLambda(prior(fraction), STEPS),
        "pid": lambda fraction: PIDPacing(prior(fraction), n_steps=STEPS),
    }
    evaluation = evaluate_bidding("tiny", test, policies)
    assert len(evaluation.rows) == len(BUDGET_FRACTIONS) * (len(policies) + 1)
    assert evaluation.policies() == [*policies, OPTIMUM_POLICY]
    for row in evaluation.rows:
        assert set(row.as_dict()) == set(ROW_KEYS)
        assert row.pct_of_optimum <= 100.0 + 1e-9
        assert is_within_budget(row.spend, row.budget)
        assert row.budget == pytest.approx(sum(budget_for(day, row.budget_fraction) for day in test))
        assert row.cpc == pytest.approx(row.spend / row.clicks)
    optimum = evaluation.row(1 / 16, OPTIMUM_POLICY)
    assert optimum.pct_of_optimum > 99.0  # the integral solution is within a request of the LP bound
    # a fixed lambda from similar days beats one constant bid at every budget
    for fraction in BUDGET_FRACTIONS:
        assert evaluation.row(fraction, "fixed_lambda").value > evaluation.row(fraction, "constant").value
    fixed, constant = evaluation.row(1 / 16, "fixed_lambda"), evaluation.row(1 / 16, "constant")
    assert evaluation.uplift_pct("fixed_lambda", "constant", 1 / 16) == pytest.approx(
        100.0 * (fixed.value / constant.value - 1.0)
    )
    # the optimum wins some auctions and not all: a tight budget cannot buy every impression
    assert 0.0 < optimum.win_rate < 1.0
    metrics = evaluation.metrics()
    assert metrics["pct_of_optimum.f1_16.pid"] == evaluation.row(1 / 16, "pid").pct_of_optimum
    assert all(isinstance(value, float) for value in metrics.values())
    table = format_table(evaluation.rows)
    assert table.splitlines()[0].split() == list(ROW_KEYS)
    assert len(table.splitlines()) == len(evaluation.rows) + 1

    figure = pacing_figure(evaluation, 1 / 8)
    assert isinstance(figure, Figure)
    axes = figure.axes[0]
    assert len(axes.lines) == len(policies) + 1  # one spend curve per policy and the ideal line
    ideal = axes.lines[-1]
    assert list(ideal.get_ydata()) == [0, 1]


def test_evaluation_hands_out_each_rows_days_for_an_interval() -> None:
    from training.evaluation.intervals import ratio_interval

    train = [make_day(seed) for seed in range(2)]
    test = [make_day(seed) for seed in range(2, 6)]
    prior = LambdaPrior.fit(train)
    policies = {"fixed_lambda": lambda fraction: FixedLambda(prior(fraction), STEPS)}
    evaluation = evaluate_bidding("tiny", test, policies, budget_fractions=(1 / 4, 1 / 8))
    intervals = []
    for row in evaluation.rows:
        values, bounds = evaluation.day_values(row.budget_fraction, row.policy)
        assert len(values) == len(bounds) == len(test)
        # the row's figures are the sums of its days
        assert values.sum() == pytest.approx(row.value)
        assert 100.0 * values.sum() / bounds.sum() == pytest.approx(row.pct_of_optimum)
        interval = ratio_interval(values, bounds, scale=100.0)
        assert interval.n == len(test) and interval.low <= row.pct_of_optimum <= interval.high
        intervals.append(interval)
    table = format_table(evaluation.rows, intervals).splitlines()
    assert table[0].split() == [*ROW_KEYS, "n", "pct", "95%", "CI"]
    assert table[1].split()[-3:-1] == ["4", f"[{intervals[0].low:.1f},"]


def test_learning_curve_figure() -> None:
    curve = LearningCurve(
        training_returns=tuple(np.linspace(50, 90, 120)),
        validation_episodes=(0, 60, 120),
        validation_returns=(60.0, 80.0, 88.0),
        fixed_lambda_return=75.0,
    )
    figure = learning_curve_figure(curve, smoothing_episodes=20)
    axes = figure.axes[0]
    assert len(axes.lines) == 3  # smoothed training returns, validation points, the fixed-lambda line
    assert list(axes.lines[1].get_ydata()) == [60.0, 80.0, 88.0]
    assert len(axes.lines[0].get_xdata()) == 120 - 20 + 1
