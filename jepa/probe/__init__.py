"""Attentive probing of frozen encoders."""
