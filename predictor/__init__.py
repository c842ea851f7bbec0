"""Latency and CLIP-score predictors (LightGBM, tracked in MLflow) and the SLO planner."""
