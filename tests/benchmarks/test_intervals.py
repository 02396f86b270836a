"""The bootstrap behind every benchmark interval (training/evaluation/intervals.py)."""

from __future__ import annotations

import numpy as np
import pytest

from training.evaluation.intervals import (
    bootstrap,
    fold_mean_interval,
    mean_interval,
    quantile_interval,
    ratio_interval,
)


def test_the_interval_of_a_mean_covers_the_known_mean_about_95_times_in_100() -> None:
    rng = np.random.default_rng(7)
    covered = 0
    for trial in range(200):
        sample = rng.exponential(2.0, 200)  # skewed, true mean 2.0
        interval = mean_interval(sample, resamples=400, seed=trial)
        assert interval.low <= sample.mean() <= interval.high
        covered += interval.low <= 2.0 <= interval.high
    # a percentile bootstrap on n=200 covers close to 95%; 200 trials put 1.96 sd at about +-3%
    assert 0.88 <= covered / 200 <= 0.99


def test_the_interval_narrows_as_n_grows() -> None:
    rng = np.random.default_rng(1)
    widths = []
    for n in (50, 500, 5000):
        interval = mean_interval(rng.normal(10.0, 3.0, n))
        assert interval.n == n
        widths.append(interval.high - interval.low)
    # the width falls like 1 / sqrt(n): about 3.2 times per step of 10
    assert widths[0] > 2.5 * widths[1] > 2.5**2 * widths[2]
    assert widths[2] == pytest.approx(2 * 1.96 * 3.0 / np.sqrt(5000), rel=0.2)


def test_the_same_seed_gives_the_same_interval_and_another_seed_another() -> None:
    sample = np.random.default_rng(3).normal(size=300)
    assert mean_interval(sample, seed=5) == mean_interval(sample, seed=5)
    assert mean_interval(sample, seed=5) != mean_interval(sample, seed=6)


def test_nan_units_are_left_out_and_no_unit_gives_nan_bounds() -> None:
    with_nan = np.array([1.0, np.nan, 3.0, np.nan, 2.0])
    interval = mean_interval(with_nan)
    assert interval.n == 3 and 1.0 <= interval.low <= interval.high <= 3.0
    empty = mean_interval(np.array([np.nan]))
    assert empty.n == 0 and np.isnan(empty.low) and np.isnan(empty.high)
    assert empty.as_dict()["n"] == 0


def test_a_ratio_resamples_numerator_and_denominator_on_the_same_units() -> None:
    rng = np.random.default_rng(2)
    optimum = rng.uniform(50, 150, 60)  # days of very different size
    achieved = 0.8 * optimum  # every day at exactly 80% of its optimum
    interval = ratio_interval(achieved, optimum, scale=100.0)
    # paired: every draw is exactly 80%; unpaired sums would scatter around it
    assert interval.low == pytest.approx(80.0) and interval.high == pytest.approx(80.0)
    with pytest.raises(ValueError, match="pair up"):
        ratio_interval(achieved, optimum[:-1])


def test_a_quantile_interval_brackets_the_sample_quantile() -> None:
    latencies = np.random.default_rng(4).lognormal(0.0, 0.5, 2000)
    interval = quantile_interval(latencies, 0.99)
    assert interval.low < np.percentile(latencies, 99) < interval.high
    assert interval.low > np.percentile(latencies, 95)


def test_a_fold_mean_resamples_units_across_all_folds() -> None:
    per_fold = np.array([[1.0, 2.0, 3.0, np.nan], [1.0, 2.0, 3.0, 6.0]])
    interval = fold_mean_interval(per_fold, resamples=2000)
    headline = np.mean([np.nanmean(row) for row in per_fold])
    assert interval.n == 4 and interval.low < headline < interval.high
    # a statistic of constant units has a zero-width interval
    assert bootstrap(lambda draws: np.ones(len(draws)), 10).low == 1.0
