"""Two-tower retrieval in PyTorch, trained with in-batch softmax and the logQ correction.

User tower: user features + the mean embedding of the user's last N items, through an MLP.
Item tower: an id embedding + an MLP over item features. Both output unit vectors; the score of
(user, item) is their inner product over a temperature.

Training treats every (user, item) interaction as a positive and the other positives in the batch
(plus optional uniformly drawn items) as negatives. In-batch negatives are drawn in proportion to
popularity, so popular items are pushed down more often than they should be; Yi et al. 2019
("Sampling-Bias-Corrected Neural Modeling for Large Corpus Item Recommendations", RecSys)
correct each logit by subtracting log Q(item), the item's expected count among the candidates.
Here the item frequencies are known exactly from the training set, so Q needs no streaming
estimate. Mixing in uniform negatives follows Yang et al. 2020 (mixed negative sampling, WWW).

The target item is hidden from the user's history while training on it, so the model learns to
predict an item from the others rather than to copy the history.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.recommendation.base import Recommender, available_cores
from models.recommendation.candidate_index import CandidateIndex, ExactCandidateIndex
from models.recommendation.interactions import Interactions


@dataclass(frozen=True)
class TwoTowerConfig:
    embedding_dim: int = 64
    hidden_dim: int = 256
    history_length: int = 50  # the last N items that make up the user's history
    epochs: int = 8
    batch_size: int = 1024
    learning_rate: float = 3e-3
    temperature: float = 0.2
    logq_correction: bool = True
    uniform_negatives: int = 0  # extra negatives per batch, drawn uniformly from the catalogue
    history_dropout: float = 0.5  # fraction of history items hidden per example while training
    id_dropout: float = 0.1  # fraction of items seen through their features only (cold items)
    seed: int = 42
    num_threads: int | None = None  # default: the cores this process may use


class _ItemTower(nn.Module):
    def __init__(self, n_items: int, n_features: int, dim: int, hidden: int) -> None:
        super().__init__()
        self.ids = nn.Embedding(n_items, dim)
        nn.init.normal_(self.ids.weight, std=0.1)
        self.features = (
            nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, dim))
            if n_features
            else None
        )

    def forward(self, items: torch.Tensor, features: torch.Tensor | None, id_keep: torch.Tensor | None):
        vectors = self.ids(items)
        if id_keep is not None:
            vectors = vectors * id_keep.unsqueeze(-1)
        if self.features is not None and features is not None:
            vectors = vectors + self.features(features)
        return F.normalize(vectors, dim=-1)

    def from_features(self, features: torch.Tensor) -> torch.Tensor:
        if self.features is None:
            raise ValueError("this two-tower model was trained without item features")
        return F.normalize(self.features(features), dim=-1)


class _UserTower(nn.Module):
    def __init__(self, n_items: int, n_features: int, dim: int, hidden: int) -> None:
        super().__init__()
        # EmbeddingBag pools without materialising batch x history x dim: 3x faster backward
        self.history = nn.EmbeddingBag(n_items + 1, dim, mode="sum", padding_idx=n_items)
        nn.init.normal_(self.history.weight, std=0.1)
        with torch.no_grad():
            self.history.weight[n_items].zero_()
        self.mlp = nn.Sequential(nn.Linear(dim + n_features, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def forward(self, history: torch.Tensor, keep: torch.Tensor, features: torch.Tensor | None):
        keep = keep.to(torch.float32)
        mean_weights = keep / keep.sum(1, keepdim=True).clamp(min=1)
        pooled = self.history(history, per_sample_weights=mean_weights)
        inputs = pooled if features is None else torch.cat([pooled, features], dim=1)
        # the residual keeps the pooled history as the main signal; the MLP mixes in features
        return F.normalize(pooled + self.mlp(inputs), dim=-1)


class TwoTower(Recommender):
    """Two-tower retrieval model; `index_` holds the item vectors for exact top-N search."""

    def __init__(self, config: TwoTowerConfig | None = None) -> None:
        self.config = config or TwoTowerConfig()

    def fit(self, interactions: Interactions) -> Self:
        config = self.config
        torch.set_num_threads(config.num_threads or available_cores())
        torch.manual_seed(config.seed)
        rng = np.random.default_rng(config.seed)

        n_items = interactions.n_items
        self.n_items_ = n_items
        self.user_features_ = _as_tensor(interactions.user_features)
        self.item_features_ = _as_tensor(interactions.item_features)
        n_user_features = 0 if self.user_features_ is None else self.user_features_.shape[1]
        n_item_features = 0 if self.item_features_ is None else self.item_features_.shape[1]
        self.user_tower_ = _UserTower(n_items, n_user_features, config.embedding_dim, config.hidden_dim)
        self.item_tower_ = _ItemTower(n_items, n_item_features, config.embedding_dim, config.hidden_dim)
        self.histories_ = self._history_matrix(interactions.recent_items(config.history_length))

        pair_users = torch.from_numpy(interactions.user_rows().astype(np.int64))
        pair_items = torch.from_numpy(interactions.matrix.indices.astype(np.int64))
        item_counts = np.bincount(interactions.matrix.indices, minlength=n_items).astype(np.float64)
        self.item_probability_ = item_counts / max(item_counts.sum(), 1.0)

        parameters = [*self.user_tower_.parameters(), *self.item_tower_.parameters()]
        optimiser = torch.optim.Adam(parameters, lr=config.learning_rate)
        self.losses_: list[float] = []
        n_pairs = len(pair_items)
        for _ in range(config.epochs):
            order = torch.from_numpy(rng.permutation(n_pairs))
            epoch_loss = 0.0
            for start in range(0, n_pairs, config.batch_size):
                batch = order[start : start + config.batch_size]
                loss = self._batch_loss(pair_users[batch], pair_items[batch], rng)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                epoch_loss += loss.item() * len(batch)
            self.losses_.append(epoch_loss / max(n_pairs, 1))

        self.user_tower_.eval()
        self.item_tower_.eval()
        with torch.inference_mode():
            all_items = torch.arange(n_items)
            item_vectors = self.item_tower_(all_items, self.item_features_, None)
        self.index_: CandidateIndex = ExactCandidateIndex(item_vectors.numpy() / config.temperature)
        return self

    def _history_matrix(self, histories: list[np.ndarray]) -> torch.Tensor:
        padded = np.full((len(histories), self.config.history_length), self.n_items_, dtype=np.int64)
        for row, items in enumerate(histories):
            padded[row, : len(items)] = items
        return torch.from_numpy(padded)

    def _batch_loss(self, users: torch.Tensor, items: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        config = self.config
        history = self.histories_[users]
        keep = (history != self.n_items_) & (history != items.unsqueeze(1))
        if config.history_dropout > 0:
            keep &= torch.from_numpy(rng.random(history.shape) >= config.history_dropout)
        user_features = None if self.user_features_ is None else self.user_features_[users]
        user_vectors = self.user_tower_(history, keep, user_features)

        candidates = items
        if config.uniform_negatives > 0:
            extra = torch.from_numpy(rng.integers(0, self.n_items_, config.uniform_negatives))
            candidates = torch.cat([items, extra])
        id_keep = None
        if self.item_features_ is not None and config.id_dropout > 0:
            id_keep = torch.from_numpy(rng.random(len(candidates)) >= config.id_dropout).to(torch.float32)
        item_features = None if self.item_features_ is None else self.item_features_[candidates]
        item_vectors = self.item_tower_(candidates, item_features, id_keep)

        # scaling the batch x dim factor is cheaper than scaling the batch x batch logits
        logits = (user_vectors / config.temperature) @ item_vectors.T
        if config.logq_correction:
            logits = logits - torch.from_numpy(self._log_candidate_frequency(candidates, len(items)))
        # another row's positive that is this row's own item is not a negative
        same_item = candidates.unsqueeze(0) == items.unsqueeze(1)
        same_item[torch.arange(len(items)), torch.arange(len(items))] = False
        logits = logits.masked_fill(same_item, float("-inf"))
        return F.cross_entropy(logits, torch.arange(len(items)))

    def _log_candidate_frequency(self, candidates: torch.Tensor, batch_size: int) -> np.ndarray:
        """log of each candidate's expected count among a batch's candidates (Yi et al. 2019)."""
        expected = batch_size * self.item_probability_[candidates.numpy()]
        expected = expected + self.config.uniform_negatives / self.n_items_
        return np.log(np.maximum(expected, 1e-12)).astype(np.float32)

    def user_vectors(self, user_idx: np.ndarray) -> np.ndarray:
        """User tower output for users of the fitted interactions, from their training history."""
        users = torch.from_numpy(np.atleast_1d(np.asarray(user_idx, dtype=np.int64)))
        history = self.histories_[users]
        features = None if self.user_features_ is None else self.user_features_[users]
        with torch.inference_mode():
            return self.user_tower_(history, history != self.n_items_, features).numpy()

    def encode_users(
        self, histories: list[np.ndarray], user_features: np.ndarray | None = None
    ) -> np.ndarray:
        """User vectors for any histories (item indices, most recent first), e.g. fresh sessions."""
        trimmed = [np.asarray(items[: self.config.history_length], dtype=np.int64) for items in histories]
        history = self._history_matrix(trimmed)
        with torch.inference_mode():
            return self.user_tower_(history, history != self.n_items_, _as_tensor(user_features)).numpy()

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        return self.index_.scores(self.user_vectors(user_idx))

    def item_vectors_from_features(self, item_features: np.ndarray) -> np.ndarray:
        """Item vectors for items never seen in training (no id embedding), scaled like `index_`."""
        with torch.inference_mode():
            vectors = self.item_tower_.from_features(_as_tensor(item_features)).numpy()
        return vectors / self.config.temperature


def _as_tensor(values: np.ndarray | None) -> torch.Tensor | None:
    return None if values is None else torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
