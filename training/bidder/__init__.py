"""The bidding family: `tradewind train bidder`, `tradewind tune bidder` and the served bidder.

One campaign buys ad impressions under a daily budget: bid = pCTR / lambda, the calibrated
LightGBM click model giving the pCTR and a DQN pacing lambda over the day. Where each job lives:

- `config.py`: the validated YAML config (configs/bidder.yaml): `BidderConfig` and its sections.
- `data.py`: the training set: contract tables `auctions`, `campaigns`, `markets`, `fx_rates` on
  market-local days in one currency, Feast context (feature service `bidding`) point in time,
  per-campaign train / held-out / click-model splits, lineage; the campaign-days the bidders replay.
- `fit.py`: the click model, each campaign's lambda prior and one DQN for all campaigns, packaged
  as the served bidder; the default hyperparameters and what tuning searches.
- `evaluate.py`: every bidder (constant, linear, fixed lambda, PID, DQN) on the held-out days
  against the hindsight optimum; the click model's AUC, log loss and ECE; pacing figures.
- `gate.py`: the retraining gate: the champion's and a challenger's DQN policies on the same
  held-out days, credited with the same clicks.
- `monitor.py`: the champion's live accuracy (normalized log loss) and pCTR drift.
- `family.py`: `FAMILY`, the record the train/tune flow, retraining, monitoring and the CLI use.

The served model (`models.bidding.served.ServedBidder`) lives with the model: the click model's
single-row scorer (`models.bidding.click_scorer`), the campaigns' priors and the Q-network's
greedy action in numpy.
"""
