"""A result store that vanishes or fails while `sdaas serve` runs is an outage, not a
fresh start (issue 25): serving stops taking work, says why, exits 1, and a restart
starts no empty store unless told to. No signal kills it without a line. Real
processes: `sdaas serve` on the embedded broker, toy models, a copy of the serving home
per test (its store is deleted or frozen)."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

from adapters.job_client import JobClient
from adapters.kafka_io import Topics
from adapters.result_store import ResultStore, StoreError
from pipelines.serving_setup import result_store_path
from sdaas.config import Settings
from tests.conftest import run_cli
from tests.pipelines.serving_home import PROMPT
from tests.pipelines.test_serving_e2e import topic_messages

FAULT_LOGGED = "(fatal: serving stops taking work)"  # sdaas.health.Faults.report's ERROR line


@pytest.fixture
def home(serving_settings, tmp_path) -> Settings:
    """The serving-ready home without its results and broker state: this test's own."""
    src = serving_settings.home

    def skip(folder, names):
        return ["results", "serving"] if Path(folder) == src / "data" else []

    shutil.copytree(src, tmp_path / "home", ignore=skip)
    return Settings(home=tmp_path / "home")


class Serve:
    """`sdaas serve` in a real process, its output read as it comes (pipes: a file size
    limit on the process must not silence it)."""

    def __init__(self, home: Settings, bootstrap: str, prefix: str, *extra: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "--home", str(home.home), "serve",
             "--bootstrap-servers", bootstrap, "--topic-prefix", prefix, "--window-s", "1",
             "--idle-exit", "300", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        self.out: list[str] = []
        self.err: list[str] = []
        pipes = ((self.proc.stdout, self.out), (self.proc.stderr, self.err))
        self.readers = [
            threading.Thread(target=to.extend, args=(f,), daemon=True) for f, to in pipes
        ]
        for t in self.readers:
            t.start()

    @property
    def stderr(self) -> str:
        return "".join(self.err)

    @property
    def output(self) -> str:
        return "".join(self.out) + self.stderr

    def exit_code(self, timeout: float = 60) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError("serve went on:\n" + self.output) from None
        for t in self.readers:
            t.join(10)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _submit(bootstrap: str, prefix: str) -> str:
    c = JobClient(bootstrap, Topics(prefix))
    job = c.submit(tenant="alice", prompt=PROMPT, style="flat", latency_slo_s=120, min_clip=0)
    c.flush()
    return job.job_id


def _stored(path: Path, job_id: str, timeout: float = 90) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if ResultStore(path, create=False).known([("alice", job_id)]):
                return True
        except StoreError:
            pass
        time.sleep(0.2)
    return False


def _store_files(path: Path) -> list[Path]:
    return [f for end in ("", "-wal", "-shm") if (f := Path(f"{path}{end}")).exists()]


def _chattr_allowed(tmp: Path) -> bool:
    f = tmp / "chattr-probe"
    f.touch()
    if subprocess.run(["chattr", "+i", str(f)], capture_output=True).returncode != 0:
        return False
    subprocess.run(["chattr", "-i", str(f)], check=True)
    return True


@contextmanager
def _unwritable(files: list[Path], pid: int, how: str):
    """The store stops taking writes for real, even as root. `immutable`: chattr +i on
    its files, as it was found (where the filesystem and the container allow it);
    `file-size-limit`: RLIMIT_FSIZE of 1 byte on the serving process (EFBIG, as a full
    disk: its writes fail, its reads work)."""
    if how == "immutable":
        subprocess.run(["chattr", "+i", *map(str, files)], check=True)
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", *map(str, files)], check=True)
    else:
        _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (1, hard))
        yield


def _stops_unwritable(serve: Serve, store: Path, how: str, submit) -> str:
    """Made unwritable while idle: `serve` says why and exits 1; the job submitted
    then (its id returned) is not stored."""
    with _unwritable(_store_files(store), serve.proc.pid, how):
        job_id = submit()
        code = serve.exit_code()
    err = serve.stderr
    assert code == 1, serve.output
    assert "Fatal Python error" not in err  # an error, not a SIGBUS
    assert f"result-store: the result store {store} cannot be written" in err
    assert FAULT_LOGGED in err and f"error: the result store {store} cannot be written" in err
    assert not ResultStore(store, create=False).known([("alice", job_id)])
    return job_id


@pytest.mark.slow
def test_a_store_deleted_while_serving_stops_it_and_no_empty_one_takes_its_place(home, broker):
    prefix, store = f"d{uuid.uuid4().hex[:6]}", result_store_path(home)
    first = _submit(broker.bootstrap, prefix)
    serve = Serve(home, broker.bootstrap, prefix, "--in-process")  # the other test: processes
    try:
        assert _stored(store, first), serve.output
        for f in _store_files(store):
            f.unlink()
        second = _submit(broker.bootstrap, prefix)
        code = serve.exit_code()
    finally:
        serve.kill()
    err = serve.stderr
    assert code == 1, serve.output
    assert f"result-store: the result store {store} is gone" in err and FAULT_LOGGED in err
    assert f"error: the result store {store} is gone" in err and "--new-store" in err
    assert not store.exists()  # the next job went into no fresh, empty store
    assert "Fatal Python error" not in err
    beats = topic_messages(broker.bootstrap, Topics(prefix).events)
    stopping = [b for b in beats if b["event"] == "stopping"]  # the API's /readyz says why
    assert stopping and "is gone" in stopping[-1]["reason"], stopping
    # a restart does not start afresh either (images and committed offsets remain) ...
    kafka = ["--bootstrap-servers", broker.bootstrap, "--topic-prefix", prefix]
    r = run_cli("--home", str(home.home), "serve", *kafka, "--idle-exit", "1")
    assert r.returncode == 1 and "--new-store" in r.stderr and not store.exists(), r.stderr
    # ... unless told to; and a fatal signal leaves its traceback, not silence
    serve = Serve(home, broker.bootstrap, prefix, "--new-store", "--in-process")
    try:
        assert _stored(store, second), serve.output  # the job the gone store never took
        serve.proc.send_signal(signal.SIGBUS)
        code = serve.exit_code()
    finally:
        serve.kill()
    assert code == -signal.SIGBUS
    assert "Fatal Python error: Bus error" in serve.stderr and "most recent call first" in (
        serve.stderr
    )


@pytest.mark.slow
def test_a_store_made_unwritable_while_serving_is_a_clear_error_and_loses_no_job(
    home, broker, tmp_path
):
    prefix, store = f"u{uuid.uuid4().hex[:6]}", result_store_path(home)
    submit = lambda: _submit(broker.bootstrap, prefix)  # noqa: E731
    first = submit()
    serve = Serve(home, broker.bootstrap, prefix)
    try:
        assert _stored(store, first), serve.output
        time.sleep(1)  # published too: serving is idle
        how = "immutable" if _chattr_allowed(tmp_path) else "file-size-limit"
        second = _stops_unwritable(serve, store, how, submit)
        # writable again: the job it could not take is read again and served ...
        serve = Serve(home, broker.bootstrap, prefix)
        assert _stored(store, second), serve.output
        time.sleep(1)
        # ... and a store that fails its writes (a full disk) stops it the same way
        _stops_unwritable(serve, store, "file-size-limit", submit)
    finally:
        serve.kill()


def test_sighup_sigterm_and_sigint_stop_serving_with_a_line():
    """A closed terminal's SIGHUP killed serving without a word; now each of these says
    so and lets the jobs in flight finish."""
    import pipelines.serving_driver as sd

    driver = object.__new__(sd.ServingDriver)
    lines: list[str] = []
    driver.stopping, driver.progress = False, lines.append
    signals = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)
    before = {s: signal.getsignal(s) for s in signals}
    unhandled = lambda *_: None  # noqa: E731 - never the default: it would end pytest
    try:
        for s in signals:
            signal.signal(s, unhandled)
        driver.install_signal_handlers()
        assert [s.name for s in signals if signal.getsignal(s) is unhandled] == []
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(0.1)  # the handler runs in the main thread, between bytecodes
    finally:
        for s, h in before.items():
            signal.signal(s, h)
    assert driver.stopping and lines == ["SIGHUP: finishing the jobs in flight, then stopping"]
