"""I/O adapters: Kafka in and out (clients, topics, the embedded Tansu broker), the
durable result store, and the Python client of the user API. Above `predictor/`, below
`pipelines/`; no Beam here."""
