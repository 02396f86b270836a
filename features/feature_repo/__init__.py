"""The Feast feature repo: `feature_store.yaml` and the Feast object definitions."""
