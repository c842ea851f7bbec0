"""The front door: an HTTP API (FastAPI on uvicorn) with tenant keys, live progress,
cancellation, metrics and a web page. It produces jobs onto the jobs topic and reads
outcomes and progress back from Kafka: a producer and a reader, never a second
scheduler."""
