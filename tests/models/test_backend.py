"""Backend: seeded determinism, per-step hooks, request validation, thread safety."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from models.backend import GenerationRequest
from models.card import load_card
from models.diffusers_backend import DiffusersBackend
from models.loader import load_backend
from models.tiny import TINY_SPECS
from sdaas.errors import InvalidInputError


@pytest.fixture(scope="module")
def backend(tiny_dir):
    # dpm-solver++ keeps multistep history in its scheduler: the state most easily corrupted.
    spec = next(s for s in TINY_SPECS if s.scheduler == "dpm-solver++")
    return load_backend(load_card(tiny_dir / "cards" / f"{spec.name}.yaml"), "cpu")


def _req(prompt="a red cat", seed=0, steps=4, **kw):
    kw = {"width": 64, "height": 64, "guidance_scale": 7.5} | kw
    return GenerationRequest((prompt,), (seed,), steps, **kw)


def _pixels(result) -> list[np.ndarray]:
    return [np.asarray(im) for im in result.images]


def test_same_seed_bit_identical_other_seed_differs(backend):
    a, b = backend.generate(_req(seed=7)), backend.generate(_req(seed=7))
    c = backend.generate(_req(seed=8))
    assert np.array_equal(_pixels(a)[0], _pixels(b)[0])
    assert not np.array_equal(_pixels(a)[0], _pixels(c)[0])
    assert a.images[0].size == (64, 64)
    assert (a.model, a.model_version, a.device) == (backend.card.name, "1.0", "cpu")


def test_batch_images_match_single_calls(backend):
    batch = backend.generate(GenerationRequest(("a red cat", "a blue dog"), (1, 2), 3, 64, 64, 7.5))
    single = backend.generate(GenerationRequest(("a blue dog",), (2,), 3, 64, 64, 7.5))
    assert len(batch.images) == 2
    diff = np.abs(_pixels(batch)[1].astype(int) - _pixels(single)[0].astype(int))
    assert diff.max() <= 2  # batched matmuls may round differently; the image is the same


def test_step_hook_sees_every_step(backend):
    seen: list[tuple[int, float]] = []
    res = backend.generate(_req(steps=5), on_step=lambda i, dt: seen.append((i, dt)))
    assert [i for i, _ in seen] == [0, 1, 2, 3, 4]
    assert all(dt > 0 for _, dt in seen)
    assert res.step_times_s == [dt for _, dt in seen]
    assert sum(res.step_times_s) <= res.latency_s


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"steps": 0}, "steps: 0"),
        ({"width": 30}, "width: 30"),
        ({"guidance_scale": -1.0}, "guidance_scale: -1.0"),
        ({"seed": -5}, "seeds: (-5,)"),
    ],
)
def test_bad_request_names_field_and_value(kwargs, needle):
    with pytest.raises(InvalidInputError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        _req(**kwargs)


def test_seed_count_must_match_prompts():
    with pytest.raises(InvalidInputError, match="one seed per prompt"):
        GenerationRequest(("a", "b"), (1,), 2, 64, 64, 7.5)


def test_request_outside_the_card_is_refused(backend):
    with pytest.raises(InvalidInputError, match="serves 64x64"):
        backend.generate(_req(width=128, height=128))
    with pytest.raises(InvalidInputError, match="serves 1..50"):
        backend.generate(_req(steps=51))


PROMPTS = ["a red cat", "", "two small blue dogs on the left of a big house", "x", "sun", "a"]


def test_concurrent_calls_equal_sequential_calls(backend):
    """Different steps and prompts at once: a shared scheduler would mix their timesteps and a
    shared fast tokenizer their padding state (both seen to change images before the fix)."""
    jobs = [(1, 2), (2, 5), (3, 3), (4, 6), (5, 4), (6, 2)]

    def gen(job):
        return _pixels(backend.generate(_req(PROMPTS[job[0] - 1], seed=job[0], steps=job[1])))[0]

    expected = {j: gen(j) for j in jobs}
    got: dict = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(jobs))

    def run(job):
        try:
            barrier.wait()
            got[job] = gen(job)
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(j,)) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for j in jobs:
        assert np.array_equal(got[j], expected[j]), f"job {j} differs when run concurrently"


def test_unloadable_source_is_a_clear_error(tiny_dir):
    from models.card import validate_card
    from sdaas.errors import SdaasError

    card = validate_card(
        {
            "name": "remote",
            "version": "1",
            "owner": "t",
            "styles": ["x"],
            "source": {"kind": "diffusers", "hub_id": "nobody/not-a-model"},
            "scheduler": "ddim",
            "resolutions": ["64x64"],
            "steps": {"min": 1, "max": 5},
            "guidance_scale": 1.0,
            "accelerators": ["cpu"],
        }
    )
    with pytest.raises(SdaasError, match="cannot load model remote@1"):
        load_backend(card, "cpu")


def test_style_reaches_the_model_through_the_card_template(backend):
    styled = backend.card.model_copy(update={"style_prompt": "{prompt}, {style} style"})
    b = DiffusersBackend(styled, backend._pipe, "cpu")
    with_style = _pixels(b.generate(_req(steps=2, style="flat")))[0]
    spelled_out = _pixels(b.generate(_req("a red cat, flat style", steps=2)))[0]
    plain = _pixels(b.generate(_req(steps=2)))[0]
    assert np.array_equal(with_style, spelled_out)
    assert not np.array_equal(with_style, plain)
    with pytest.raises(InvalidInputError, match="style: 'cubist'"):
        b.generate(_req(steps=2, style="cubist"))


@pytest.mark.parametrize(
    ("cores", "devices", "env", "want"),
    [
        (2, 1, "", 1),  # one core left to the serving front
        (16, 1, "", 15),
        (16, 3, "", 5),  # split over the CPU engines
        (2, 2, "", 1),  # never none
        (1, 1, "", 1),  # nothing to leave
        (16, 1, "3", 3),  # SDAAS_TORCH_THREADS says
    ],
)
def test_cpu_threads_leave_a_core_to_the_front(monkeypatch, cores, devices, env, want):
    from models import backend as mod

    monkeypatch.setattr(mod.os, "cpu_count", lambda: cores)
    monkeypatch.setenv("SDAAS_TORCH_THREADS", env)
    assert mod.cpu_threads(devices) == want


def test_bad_thread_setting_says_what_to_give(monkeypatch):
    from models.backend import cpu_threads

    monkeypatch.setenv("SDAAS_TORCH_THREADS", "two")
    with pytest.raises(InvalidInputError, match="SDAAS_TORCH_THREADS='two'"):
        cpu_threads()


def test_a_cpu_model_loads_at_the_threads_it_is_profiled_and_served_at(tiny_dir, monkeypatch):
    import torch

    before = torch.get_num_threads()
    monkeypatch.setenv("SDAAS_TORCH_THREADS", str(before + 1))
    spec = TINY_SPECS[0]
    try:
        load_backend(load_card(tiny_dir / "cards" / f"{spec.name}.yaml"), "cpu")
        assert torch.get_num_threads() == before + 1
    finally:
        torch.set_num_threads(before)
