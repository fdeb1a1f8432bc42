"""Model-card templates (installed as the package `hf_mmbalance.model_cards`)."""
