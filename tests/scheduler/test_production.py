"""The production-like request stream reproduces the published statistics of the
production trace within 10 %: step mix, images per request, checkpoint popularity,
LoRA share, inter-arrival CV and the hourly profile."""

import numpy as np
import pytest

from scheduler.production import PRODUCTION, production_requests, zipf_exponent
from sdaas.errors import InvalidInputError


def within(x: float, target: float, rel: float = 0.10) -> bool:
    return abs(x - target) <= rel * abs(target)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_stream_has_the_published_statistics(seed):
    st = PRODUCTION
    r = production_requests(seed=seed)
    assert r.n == st.requests and (np.diff(r.arrival) >= 0).all()
    assert within((r.steps == 30).mean(), 0.906)
    assert within((r.steps == 40).mean(), 0.051)
    assert r.steps.min() >= 1 and r.steps.max() <= 100
    assert within((r.images > 1).mean(), 0.42)  # 2-8 images in 42 % of requests
    assert set(np.unique(r.images)) == {1, 2, 4, 8}
    assert within(np.bincount(r.checkpoint).max() / r.n, st.top_checkpoint_share)
    assert len(np.unique(r.checkpoint)) >= 0.9 * st.checkpoints  # the long tail is there
    assert within(r.lora.mean(), st.lora_share)
    gaps = np.diff(r.arrival)
    assert within(gaps.std() / gaps.mean(), st.interarrival_cv)
    hours = np.bincount((r.arrival // 3600).astype(int), minlength=st.days * 24)
    assert len(hours) == st.days * 24
    assert within((hours == 0).mean(), st.empty_hour_share)
    assert within(hours.max() / hours.mean(), st.peak_hour_ratio)


def test_shorter_streams_keep_the_hourly_rate_and_bad_sizes_are_refused():
    r = production_requests(5000, seed=3)
    per_hour = r.n / np.ceil(r.arrival[-1] / 3600)
    assert within(per_hour, PRODUCTION.requests / (PRODUCTION.days * 24), rel=0.25)
    for bad in (1, 0, -5, 2.5):
        with pytest.raises(InvalidInputError, match="requests"):
            production_requests(bad)


def test_zipf_exponent_gives_the_top_share():
    s = zipf_exponent(86, 0.31)
    p = np.arange(1, 87, dtype=float) ** -s
    assert p[0] / p.sum() == pytest.approx(0.31, rel=1e-6)
