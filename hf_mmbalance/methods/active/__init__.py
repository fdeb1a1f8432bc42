"""BMMAL — balanced multimodal active learning, with the Random / Entropy / BADGE baselines in the same loop.

* `shapley.py` — exact per-sample Shapley values per modality on cached features (Eq. 9-10), Phi, rho, w (Eq. 5, 13);
* `embeddings.py` — the rank-1 gradient embeddings (p − onehot(ŷ)) ⊗ [w_1 z_1; …; w_M z_M] (Eq. 12-14), as factors;
* `selection.py` — k-means++ on the factorized distance, entropy, random;
* `strategies.py` — pool scoring (split across ranks) and the strategies behind one interface;
* `pool.py` — row ids (`sample_idx`, or content hashes) and the pool fingerprint, up-front pool checks, oracle-answer checks;
* `state.py` — the run's state (acquired row ids, positions and labels per round, pool fingerprint, config), written
  atomically as JSON and checked against the pool and the options on resume;
* `loop.py` — `run_active_learning`, resumable; `config.py` — `ActiveLearningConfig`;
* `diagnostics.py` — learning curves per strategy and Phi per round (paper Fig. 2-3 style).
"""

from .config import ActiveLearningConfig
from .diagnostics import plot_contributions, plot_learning_curves
from .embeddings import gradient_embedding_factors
from .loop import ActiveLearningResult, hidden_label_oracle, run_active_learning
from .pool import PoolIdentity
from .selection import entropy_scores, factorized_sq_distances, kmeans_plus_plus
from .shapley import dominance, modality_contributions, modality_weights, shapley_values, subset_values
from .state import ActiveLearningState, RoundRecord

__all__ = [
    "ActiveLearningConfig",
    "ActiveLearningResult",
    "ActiveLearningState",
    "PoolIdentity",
    "RoundRecord",
    "dominance",
    "entropy_scores",
    "factorized_sq_distances",
    "gradient_embedding_factors",
    "hidden_label_oracle",
    "kmeans_plus_plus",
    "modality_contributions",
    "modality_weights",
    "plot_contributions",
    "plot_learning_curves",
    "run_active_learning",
    "shapley_values",
    "subset_values",
]
