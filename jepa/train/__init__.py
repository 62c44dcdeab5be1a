"""Training: optimizer and schedules, pretraining, AC-predictor training, checkpoints, logging."""
