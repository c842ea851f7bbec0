"""Apache Beam pipelines: the profiling sweep (batch) and the serving pipeline (streaming)."""
