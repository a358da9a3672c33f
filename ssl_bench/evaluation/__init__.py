"""Evaluation layer: metrics (equal to medpy), inference, and scoring a model on a split. Imports only core."""
