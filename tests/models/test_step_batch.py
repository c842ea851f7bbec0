"""Step-level batching: a job stepped by `StepBatcher` makes the image the pipeline's own
call makes, for every sampler the tiny models use, alone or batched with jobs at other
steps and progress; pipelines it cannot step are refused, not mis-stepped."""

from __future__ import annotations

import numpy as np
import pytest

from models.backend import GenerationRequest
from models.card import load_card
from models.loader import load_backend
from models.step_batch import supports
from models.tiny import TINY_SPECS

TOLERANCE = 2  # of 255 per pixel: batched convolutions may round differently (seen: 0)


@pytest.fixture(scope="module", params=[s.name for s in TINY_SPECS])
def backend(request, tiny_dir):
    return load_backend(load_card(tiny_dir / "cards" / f"{request.param}.yaml"), "cpu")


def _pixels(image) -> np.ndarray:
    return np.asarray(image).astype(int)


def test_stepped_jobs_make_the_pipelines_images(backend):
    st = backend.stepper()
    assert st is not None
    ref = backend.generate(GenerationRequest(("a red cat",), (5,), 6, 64, 64, 7.5)).images[0]
    other = st.start("a blue dog", 9, 4, 64, 64, 7.5)
    st.step([other])  # a job already one step in
    job = st.start("a red cat", 5, 6, 64, 64, 7.5)
    late = None
    while not job.finished:
        if job.done_calls == 2:
            late = st.start("a green bird", 1, 3, 64, 64, 7.5)  # joins mid-way
        st.step([j for j in (job, other, late) if j is not None and not j.finished])
    assert job.calls == 6 and other.finished and late is not None
    assert np.abs(_pixels(st.finish([job])[0]) - _pixels(ref)).max() <= TOLERANCE


def test_jobs_of_other_resolutions_are_not_stepped_together(backend):
    st = backend.stepper()
    a = st.start("a red cat", 1, 2, 64, 64, 7.5)
    b = st.start("a red cat", 1, 2, 32, 32, 7.5)  # the card would refuse it; shapes differ
    with pytest.raises(ValueError, match="one shape"):
        st.step([a, b])


def test_a_second_order_sampler_is_not_stepped(backend):
    from diffusers import HeunDiscreteScheduler

    pipe = backend._pipe
    saved = pipe.scheduler
    try:
        pipe.scheduler = HeunDiscreteScheduler.from_config(saved.config)
        assert not supports(pipe)
    finally:
        pipe.scheduler = saved
    assert supports(pipe)
