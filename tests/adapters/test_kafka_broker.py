"""The embedded broker (Tansu, a real process): a broker that exits at start says why,
from its own log, and where that log is."""

from __future__ import annotations

import pytest

from adapters.kafka_broker import EmbeddedBroker
from sdaas.errors import SdaasError


def test_a_broker_that_exits_at_start_says_why(tmp_path):
    log = tmp_path / "broker.log"
    with pytest.raises(SdaasError) as e:
        EmbeddedBroker(port=70000, log_file=log).start(timeout=20)  # no such port
    assert "exited with" in str(e.value) and "InvalidPort" in str(e.value)
    assert str(log) in str(e.value)
