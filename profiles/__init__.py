"""Profile data: Parquet I/O of profile rows, the reference profiles built from published
figures, and the fitted summaries. Plain pyarrow/polars, no Beam, so the predictor and
the simulator can read profiles without the pipelines layer."""
