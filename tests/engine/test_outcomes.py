"""engine/outcomes.py, the sink that stores each job's outcome: when the store takes no
outcome at all for a job (a sqlite error that is no StoreError, e.g. 'database is locked'
past its wait), the job must not stay in flight for ever (serving's drain would hang):
it is let go as a fatal store fault, loudly, and its record is read again on restart."""

from __future__ import annotations

import json
import sqlite3
from types import SimpleNamespace as NS

from engine.outcomes import Admitted, OutcomeSink
from sdaas.health import Faults
from sdaas.job_request import parse_job
from sdaas.records import Job


class LockedStore:
    path = "results.db"

    def __init__(self):
        self.tries = 0

    def put(self, results, sources):
        self.tries += 1
        raise sqlite3.OperationalError("database is locked")


def test_an_outcome_no_store_write_takes_is_a_fatal_fault_not_a_job_in_flight_for_ever():
    raw = json.dumps({"job_id": "j-1", "tenant": "acme", "prompt": "a red circle",
                      "style": "flat", "latency_slo_s": 2.0, "min_clip": 0}).encode()  # fmt: skip
    job = Job(parse_job(raw), "sdaas.jobs/0/7@1", 1.7e9)
    core = NS(payload=[Admitted(job, [], {}, "w1")], kind=[-1])
    answered, faults, store = [], Faults(), LockedStore()
    sink = OutcomeSink(NS(policy="slack-sjf"), store, core, None, faults,
                       lambda j, key, stored: (answered.append((j, key, stored)),
                                               core.payload.__setitem__(j, None)),
                       model_keys=[], kinds=[], devices=[], clock=lambda: 0.0)  # fmt: skip
    try:
        sink._answer_failed(0, "storing its result failed (a bug)")
    finally:
        sink.close()
    assert store.tries == 1  # the failed answer was tried, then the store given up on
    assert answered == [(0, ("acme", "j-1"), False)]  # out of flight, not stored
    (fault,) = [f for f in faults.current() if f.fatal]
    assert fault.part == "result-store" and "database is locked" in fault.reason
    assert "a red circle" not in fault.reason  # never the prompt
