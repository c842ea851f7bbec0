"""Putting a serving process together from an sdaas home: the planner over this host's
accelerators, the registered cards, the CLIP scorer and the result store."""

from __future__ import annotations

from engine.calibrator import observed_corrections_in
from engine.spec import ServingSpec
from pipelines.profile_sweep import default_clip
from sdaas.config import Settings
from sdaas.errors import InvalidInputError, SdaasError


def toyworld_home(home):
    """(Settings, Registry) of a home at `home` with the shipped toy-world models
    registered, nothing profiled yet."""
    from pathlib import Path

    from models.registry import Registry
    from sdaas.config import SHIPPED_TOYWORLD

    s = Settings(home=Path(home))
    s.models_dir.mkdir(parents=True, exist_ok=True)
    reg = Registry(s.registry_path, model_roots=s.model_roots)
    for card in sorted((SHIPPED_TOYWORLD / "cards").glob("*.yaml")):
        reg.register_file(card, exist_ok=True)
    return s, reg


def prepare_toy_home(home) -> Settings:
    """A serving-ready home: the shipped toy-world models registered, a small real
    profiling sweep on this host and predictors trained on it (about 30-40 s). Used by
    the serving tests and benchmark; `make demo` does the same with a larger sweep."""
    from pipelines.profile_grid import SweepConfig
    from pipelines.profile_sweep import run_sweep
    from predictor.train_cli import train_all

    s, _ = toyworld_home(home)
    run_sweep(s, SweepConfig(steps=(1, 2, 4, 8), prompts=1, seeds=(0,)), progress=lambda *_: None)
    train_all(s, data="measured", accept_noisy=True)  # tests must not need a quiet host
    return s


def result_store_path(settings: Settings):
    return settings.data_dir / "results" / "results.db"


def observed_corrections(settings: Settings):
    """What serving on this home has observed of the champion latency predictor: its
    corrections per (model, accelerator, batch size) as the runs were observed (no host
    drift taken out: what `models show` and `profile --stale` report), stale ones
    included. None when nothing has been served here, or there is no champion."""
    from adapters.result_store import ResultStore, StoreError
    from predictor.store import PredictorStoreError, load_predictor
    from predictor.tracking import LATENCY_MODEL

    try:
        store = ResultStore(result_store_path(settings), create=False)
        version = load_predictor(settings, LATENCY_MODEL).version
    except (StoreError, PredictorStoreError):
        return None
    return observed_corrections_in(store, version, drift=False)


def cluster_devices(settings: Settings, address: str) -> list:
    """On a Ray cluster without --devices: one device per accelerator kind the latency
    predictor knows and the cluster's nodes offer engines of (this host need not have
    any of them: the serving process only schedules and stores)."""
    from engine.ray_fleet import connect, offered_resources, resource_name
    from models.accelerators import Accelerator
    from predictor.planner import accelerators_known_to
    from predictor.store import load_predictor
    from predictor.tracking import LATENCY_MODEL

    connect(address)
    offered = offered_resources()
    known = accelerators_known_to(load_predictor(settings, LATENCY_MODEL))
    kinds = [k for k in known if resource_name(k) in offered]
    if not kinds:
        raise InvalidInputError(
            f"the Ray cluster at {address} offers engines of {sorted(offered) or 'nothing'}; "
            f"the profiled accelerators are {known}: offer one of "
            f"{[resource_name(k) for k in known]} on its nodes (ray start --resources)"
        )
    return [Accelerator("cpu" if k.startswith("cpu") else "cuda", k) for k in kinds]


def build_spec(
    settings: Settings,
    *,
    policy: str = "slack-sjf",
    window_s: float = 2.0,
    max_backlog_s: float = 30.0,
    headroom: float = 0.1,
    topic: str = "sdaas.jobs",
    devices: list[str] | None = None,
    threads: int | None = None,
    device_processes: bool | None = None,
    max_resident: int | None = None,
    ray: str | None = None,
    max_engines: int | None = None,
    idle_probe: bool = False,
) -> ServingSpec:
    """devices: device names (`models.accelerators.resolve_devices`; default every CUDA
    device, else the CPU). threads: torch CPU threads per device engine (default: the
    sweep's rule, `models.backend.cpu_threads`: the host's cores less one for the front,
    split over its CPU devices).
    device_processes: one process per device engine (None: when there are several).
    max_resident: models resident at once per device (None: all, preloaded).
    ray: serve on a Ray cluster ("auto": one started here; else its address): the
    devices' kinds are what it serves, its nodes' engines where (`engine/ray_fleet.py`);
    max_engines: room for that many engines per kind (the elastic loop fills it).
    idle_probe: time a reference probe now and then while idle (the host drift)."""
    from models.accelerators import resolve_devices
    from models.backend import cpu_threads
    from models.registry import Registry
    from predictor.planner import load_planner
    from predictor.store import PredictorStoreError
    from scheduler.policies import make_policy

    make_policy(policy)  # an unknown policy fails here, naming the known ones
    if max_resident is not None and (not isinstance(max_resident, int) or max_resident < 1):
        raise InvalidInputError(f"--max-resident: {max_resident!r}: must be an integer >= 1")
    if max_engines is not None and (not ray or not isinstance(max_engines, int) or max_engines < 1):
        raise InvalidInputError(f"--max-engines: {max_engines!r}: an integer >= 1, with --ray "
                                "(room for engines on a Ray cluster)")  # fmt: skip
    if ray and ray != "auto" and not devices:  # what the cluster's nodes offer engines of
        devices = cluster_devices(settings, ray)
    else:
        devices = resolve_devices(devices)  # every instance: 8 identical GPUs are 8 places
    cpus = sum(d.device == "cpu" for d in devices)
    if threads is None and cpus:  # the sweep's rule, so its profile holds as served
        threads = cpu_threads(cpus)
    try:
        planner = load_planner(
            settings,
            headroom=headroom,
            accelerators=list(dict.fromkeys(d.name for d in devices)),
            batch_sizes=None,  # every profiled batch size: the batches the engine may form
        )
    except PredictorStoreError as exc:
        raise SdaasError(
            f"{exc}. Serving needs trained predictors: run `make demo` once, or "
            "`sdaas profile` then `sdaas train`"
        ) from None
    cards = {r.card.key: r.card for r in Registry(settings.registry_path).list()}
    clip = default_clip(settings)
    return ServingSpec(
        planner=planner,
        cards=cards,
        devices=tuple(d for d in devices if any(d.name in o.accelerators for o in planner.options)),
        store_path=str(result_store_path(settings)),
        clip_path=str(clip) if (clip / "config.json").is_file() else None,
        policy=policy,
        window_s=window_s,
        max_backlog_s=max_backlog_s,
        source_topic=topic,
        threads=threads,
        device_processes=device_processes,
        max_resident=max_resident,
        ray=ray,
        max_engines=max_engines,
        idle_probe=idle_probe,
    )
