"""Bidding: one campaign buying ad impressions under a daily budget, bid = value x pCTR / lambda.

Modules, each small and free of MLflow, Feast, Ray and training/:
- `days`: a market-local day of bid requests as arrays (the generic replay source), budgets.
- `auction`: second- and first-price auction rules and the hard budget guard.
- `hindsight`: the best set of auctions to win in hindsight (knapsack LP bound and greedy).
- `policy`: the per-request interface the server calls (`BidPolicy`, `CampaignState`).
- `baselines`: constant, linear, fixed-lambda and PID pacing policies, tuned on training days.
- `environment`: a gymnasium environment replaying a day in time steps, actions adjust lambda.
- `episodes`: the training-day generator (resampled, perturbed days, varied budgets).
- `dqn`: the DRLB-style DQN agent, its pure rollout function and its `BidPolicy`.
- `learning_curve`: the record of an agent's training (torch-free, for evaluation and plots).
- `replay`: a policy replayed request by request over a day, as the server would run it.
- `click_model`: the calibrated LightGBM click (or conversion) model and its calibration map.
- `click_scorer`: that model for one request (LightGBM's single-row path, the same calibration).
- `served`: the served bidder (`ServedBidder`, `ServedCampaign`): pCTR / lambda per request.
- `synthetic`: a small auction-day generator, a stand-in for the marketplace simulator.
- `ipinyou_replay`: the raw iPinYou log as replayable days with a known click model.
"""
