"""Evaluation written once for every model family: metrics, protocols, baselines, oracles."""
