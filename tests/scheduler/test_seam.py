"""The seam between the core and the device engines: every command and event survives
`encode`/`decode` unchanged (what a device process and, in issue 27, a remote engine
pass), and bytes from another seam version or of no record are refused, not misread."""

from __future__ import annotations

import pickle

import pytest
from PIL import Image

from scheduler import seam
from scheduler.seam import (
    Cut,
    Done,
    Failed,
    Forget,
    ImageRequest,
    Probe,
    Probed,
    Ready,
    RunStats,
    SegmentEnded,
    SegmentJob,
    Started,
    StartSegment,
    Stepped,
    Stop,
)

REQ = ImageRequest("two red circles, flat style", 7, 32, 48, 4.5)
ONE_OF_EACH = [
    StartSegment(1, (SegmentJob(3, 0, 25, REQ), SegmentJob(4, 0, 10)), 6),
    Cut(1),
    Forget(0, (3, 4)),
    Probe(2, "toy-m@1", REQ, 8, 4),
    Stop(0),
    Ready(0),
    Ready(1, error="ImportError: no torch"),
    Started(0, 3),
    Stepped(0, 3, 2, 25),
    Failed(0, 4, "RuntimeError: CUDA error"),
    SegmentEnded(0, 6, (4,)),
    Probed(2, seconds=0.25),
    Probed(2, error="ValueError: no batch"),
]


def test_every_record_kind_is_covered_here():
    kinds = {m.kind for m in ONE_OF_EACH} | {Done.kind}
    assert kinds == set(seam.all_kinds())


@pytest.mark.parametrize("message", ONE_OF_EACH, ids=lambda m: m.kind)
def test_a_record_round_trips_unchanged(message):
    back = seam.decode(seam.encode(message))
    assert back == message and type(back) is type(message)


def test_a_done_keeps_its_image_and_stats():
    image = Image.new("RGB", (4, 3), (200, 10, 30))
    done = Done(1, 9, image, RunStats(12.5, 0.75, 3, 2, (0.1, 0.2)))
    back = seam.decode(seam.encode(done))
    assert back.stats == done.stats and (back.device, back.job) == (1, 9)
    assert back.image.size == (4, 3) and back.image.getpixel((0, 0)) == (200, 10, 30)


def test_records_are_frozen():
    with pytest.raises(AttributeError):
        Cut(0).device = 1


def test_another_version_or_garbage_is_refused():
    _, kind, values = pickle.loads(seam.encode(Cut(0)))
    with pytest.raises(seam.SeamError, match="version 99"):
        seam.decode(pickle.dumps((99, kind, values)))
    with pytest.raises(seam.SeamError, match="unknown"):
        seam.decode(pickle.dumps((seam.SEAM_VERSION, "launch", ())))
    with pytest.raises(seam.SeamError, match="not a seam record"):
        seam.decode(b"\x00garbage")
