"""The record of an agent's training, kept apart from torch so evaluation and plots can read it cheaply."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LearningCurve:
    training_returns: tuple[float, ...]  # per episode, with exploration
    validation_episodes: tuple[int, ...]  # episodes trained when each validation ran
    validation_returns: tuple[float, ...]  # greedy, mean over the fixed validation episodes
    fixed_lambda_return: float  # never adjusting lambda, on the same validation episodes
