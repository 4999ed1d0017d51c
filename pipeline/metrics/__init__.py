"""Evaluation metrics: FD/KD (clean-fid), Inception-v3 features, Inception Score, dataset classifier, error bars."""
