"""The serving transform as a streaming pipeline, for runners that stream from Kafka
(Flink, Dataflow): `ReadFromKafka` is a Java cross-language transform, so it needs an
expansion service those runners provide (it cannot be downloaded on this machine; the
local default is the micro-batch driver). Windowing, planning and SJF order are the
same `ServeJobs`; `tests/pipelines/test_serving_stream.py` runs it under TestStream."""

from __future__ import annotations

import apache_beam as beam

from adapters.kafka_io import RawRecord
from pipelines.serving import ServeJobs, ServingSpec


def to_raw_record(msg) -> RawRecord:
    """A ReadFromKafka(with_metadata=True) element as the transform's input record."""
    return RawRecord(msg.partition, msg.offset, msg.value or b"", msg.timestamp / 1000)


def streaming_pipeline(p: beam.Pipeline, spec: ServingSpec, *, bootstrap: str, topic: str):
    from apache_beam.io.kafka import ReadFromKafka

    records = (
        p
        | "ReadJobs"
        >> ReadFromKafka(
            consumer_config={"bootstrap.servers": bootstrap, "group.id": "sdaas-serving"},
            topics=[topic],
            with_metadata=True,
        )
        | "ToRecords" >> beam.Map(to_raw_record)
    )
    return records | ServeJobs(spec)
