"""Training (rule train): trainer, resume state, per-epoch prediction dumps, learning curves."""
