"""GET /v1/styles: the styles the API checks a job's style against, for any tenant's key
(the page's Style list), without a broker or serving."""

from __future__ import annotations

import httpx
import pytest

from api.front import ApiConfig, Front
from api.server import ApiServer


@pytest.fixture
def api_alone(monkeypatch):
    """The API with its Kafka side not started."""
    monkeypatch.setattr(Front, "start", lambda self, loop: setattr(self, "_loop", loop))
    monkeypatch.setattr(Front, "stop", lambda self: (self.watch.stop(), self.book.close()))
    return ApiServer


def test_a_tenant_key_lists_the_served_styles_first_one_first(api_alone, tmp_path):
    cfg = ApiConfig(bootstrap="unused:1", data_dir=tmp_path, results_dir=tmp_path,
                    styles=("outline", "flat"),
                    resolutions={"outline": ((32, 32),), "flat": ((32, 32), (64, 48))})  # fmt: skip
    with api_alone(cfg) as api:
        key = api.front.keys.create("ann")
        with httpx.Client(base_url=api.url, timeout=10) as c:
            assert c.get("/v1/styles").status_code == 401  # a key, like every /v1 route
            r = c.get("/v1/styles", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200
    assert r.json() == {
        "styles": ["outline", "flat"],  # as serving lists them: the page defaults to the first
        "resolutions": {"outline": ["32x32"], "flat": ["32x32", "64x48"]},
        "checked": True,
    }


def test_an_api_started_without_styles_says_it_does_not_check_them(api_alone, tmp_path):
    cfg = ApiConfig(bootstrap="unused:1", data_dir=tmp_path, results_dir=tmp_path)
    with api_alone(cfg) as api:
        key = api.front.keys.create("ann")
        r = httpx.get(f"{api.url}/v1/styles", headers={"Authorization": f"Bearer {key}"})
    assert r.json() == {"styles": [], "resolutions": {}, "checked": False}
