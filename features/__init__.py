"""Data and features: the contract, ingest with quarantine, the marketplace simulator, real-data
loaders, polars feature transformations and the Feast feature repo."""
