"""Benchmarks behind `tradewind benchmark ...`: scripts that print measured figures."""
