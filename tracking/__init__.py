"""MLflow for the whole platform: runs (tracking) and the model registry. Below training and serving:
both import it, it imports neither."""
