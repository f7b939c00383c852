"""Training: the masked-prediction training loop and the baseline's pretraining (targets, iterations)."""
