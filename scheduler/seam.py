"""The one seam between the scheduling core and the device engines: the commands the core
sends to a device and the events a device sends back, as frozen, versioned records.

    core ──StartSegment / Cut / Forget / Probe / Stop──────────────► device engine
         ◄──Ready / Started / Stepped / Done / Failed / SegmentEnded / Probed──┘
                            (a thread, a device process, a remote actor)

A device is anything with `send(command)`; its events go to the callback it was given.
Threads pass the records as they are; a device process (and, across hosts, a remote
engine) passes `encode(record)` and `decode(bytes)`: one serialisation, checked against
`SEAM_VERSION`, so two sides built from different code refuse each other loudly instead
of misreading a field. Jobs are named by the core's index; a `SegmentJob` carries the
image request the device needs (the serving side fills it in), never more.

Cancelling is not a command of its own: the core cuts a running segment (`Cut`) and,
when the segment has ended, tells the device to `Forget` the jobs it cancelled.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, fields
from typing import Any, ClassVar

SEAM_VERSION = 1  # bump on any change to a record below


class SeamError(ValueError):
    """Bytes that are not a seam record of this version."""


@dataclass(frozen=True)
class ImageRequest:
    """What a device needs to make one job's image."""

    prompt: str  # styled already: what the text encoder sees
    seed: int
    width: int
    height: int
    guidance: float


@dataclass(frozen=True)
class SegmentJob:
    """A job as a device runs it: the core's index, the catalog model, the steps it is
    served at (the policy may have down-shifted it) and its image request."""

    index: int
    model: int
    steps: int
    request: ImageRequest | None = None


@dataclass(frozen=True)
class RunStats:
    """A job's life on a device: when its first step started, its whole run, its largest
    batch, the segments it took and each step's seconds."""

    started: float
    run_s: float
    max_batch: int = 1
    segments: int = 1
    step_s: tuple[float, ...] = ()


_KINDS: dict[str, type] = {}


@dataclass(frozen=True)
class Message:
    """A command or an event; `device` is the core's instance index."""

    kind: ClassVar[str] = ""
    device: int

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if cls.kind:
            _KINDS[cls.kind] = cls


class Command(Message):
    """Core to device."""


class Event(Message):
    """Device to core."""


@dataclass(frozen=True)
class StartSegment(Command):
    """Run `jobs` together for `steps` denoising steps (fewer when cut), then say
    `SegmentEnded`. A job seen before resumes from the state the device kept."""

    kind: ClassVar[str] = "start_segment"
    jobs: tuple[SegmentJob, ...]
    steps: int


@dataclass(frozen=True)
class Cut(Command):
    """End the running segment at its next step boundary (preemption, a cancel)."""

    kind: ClassVar[str] = "cut"


@dataclass(frozen=True)
class Forget(Command):
    """Drop these jobs' step states: the core ended them (cancelled)."""

    kind: ClassVar[str] = "forget"
    jobs: tuple[int, ...]


@dataclass(frozen=True)
class Probe(Command):
    """Run one job alone (or `batch` copies stepped together) between segments, as jobs
    run there, and say `Probed` with its seconds."""

    kind: ClassVar[str] = "probe"
    model_key: str
    request: ImageRequest
    steps: int
    batch: int = 1


@dataclass(frozen=True)
class Stop(Command):
    kind: ClassVar[str] = "stop"


@dataclass(frozen=True)
class Ready(Event):
    """The device loaded what it needs and takes commands (`error`: it could not)."""

    kind: ClassVar[str] = "ready"
    error: str = ""


@dataclass(frozen=True)
class Started(Event):
    """A job's first step is about to run on this device."""

    kind: ClassVar[str] = "started"
    job: int


@dataclass(frozen=True)
class Stepped(Event):
    kind: ClassVar[str] = "stepped"
    job: int
    step: int
    of: int


@dataclass(frozen=True)
class Done(Event):
    """A job's image exists (a PIL image; pickled by `encode`)."""

    kind: ClassVar[str] = "done"
    job: int
    image: Any
    stats: RunStats


@dataclass(frozen=True)
class Failed(Event):
    kind: ClassVar[str] = "failed"
    job: int
    error: str


@dataclass(frozen=True)
class SegmentEnded(Event):
    """The segment ran `steps_run` steps; `failed` jobs already had their `Failed`."""

    kind: ClassVar[str] = "segment_ended"
    steps_run: int
    failed: tuple[int, ...] = ()


@dataclass(frozen=True)
class Probed(Event):
    kind: ClassVar[str] = "probed"
    seconds: float = 0.0
    error: str = ""  # why the probe failed ("" when it ran)


def encode(message: Message) -> bytes:
    """The record as bytes: the seam's version, its kind, its fields in order."""
    values = tuple(getattr(message, f.name) for f in fields(message))
    return pickle.dumps((SEAM_VERSION, message.kind, values), protocol=pickle.HIGHEST_PROTOCOL)


def decode(data: bytes) -> Message:
    """The record `encode` made; SeamError for anything else."""
    try:
        version, kind, values = pickle.loads(data)  # noqa: S301 - our own pipe, our own peer
    except Exception as exc:  # noqa: BLE001 - whatever it is, it is not a record
        raise SeamError(f"not a seam record ({type(exc).__name__})") from None
    if version != SEAM_VERSION:
        raise SeamError(f"seam version {version!r}, this side speaks {SEAM_VERSION}")
    if kind not in _KINDS:
        raise SeamError(f"unknown seam record {kind!r}")
    return _KINDS[kind](*values)


def all_kinds() -> dict[str, type]:
    """Every record, by kind (the round-trip test covers each)."""
    return dict(_KINDS)
