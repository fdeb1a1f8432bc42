"""ULGM: unimodal label generation for regression (SUGRM §3.3 and Self-MM); see `updates.py`."""
