"""The recommendation family: `tradewind train|tune recommender` on the simulator's world.

Retrievers (EASE, item-kNN, content, two-tower, trending-in-market) propose their top unbought items
listed in the market; LightGBM LambdaRank orders their union; the rest of the allowed catalogue
follows in EASE order (the back-fill); unknown users get market-aware trending items.

Where each job lives:
- config.py: the validated YAML config (`RecommenderConfig` and its sections);
- data.py: the training set from the contract tables and Feast (`RecommenderData`, splits, lineage);
- fit.py: retrievers, the ranker, the served model wrapped for MLflow; default params, search space;
- evaluate.py: the served model on the test period beside the baselines and the oracle, figures;
- gate.py: champion and challenger (plain served models) on the latest holdout;
- monitor.py: the champion's live check (category drift, hit rate since training);
- family.py: `FAMILY`, the record the training flow reads.
The model itself (retrieval, candidates, the served class) lives in models/recommendation/.
"""
