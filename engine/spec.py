"""What one serving runtime serves: the planner, the model cards, the devices, the store,
the policy and the knobs. Picklable (the planner holds only its curves), so a Beam
worker can build the same runtime from it."""

from __future__ import annotations

from dataclasses import dataclass

from models.accelerators import Accelerator
from models.card import ModelCard
from predictor.planner import Planner


@dataclass(frozen=True)
class ServingSpec:
    """Everything the transform needs; picklable (the planner holds only its curves)."""

    planner: Planner
    cards: dict[str, ModelCard]  # model_key -> card
    devices: tuple[Accelerator, ...]  # device instances; identical ones share a profile name
    store_path: str
    clip_path: str | None = None
    policy: str = "slack-sjf"  # the serving default: ours
    window_s: float = 2.0
    max_backlog_s: float = 30.0  # admission, every policy: most queued predicted s per device
    source_topic: str = "sdaas.jobs"
    correct_latency: bool = True  # probe unproven profiles, scale by observed run time
    threads: int | None = None  # torch CPU threads per device engine (None: torch's own)
    # each device engine in a process of its own (engine/device_process.py); None: when
    # there are several devices (threads of one process share the GIL)
    device_processes: bool | None = None
    # models resident at once per device (LRU, load time measured and charged by the
    # core, as the simulator does); None: every model, preloaded
    max_resident: int | None = None
    # while idle, time a reference probe now and then (the host drift's evidence when no
    # job brings any; `engine/calibrator.py: IdleProbes`). Off by default: it runs beside
    # the core on a device the core thinks idle, and no quiet-host run has yet shown it
    # helps (bench/drift_bench.py)
    idle_probe: bool = False
    # serve on a Ray cluster: "auto" (one started here, on loopback) or its address; one
    # engine actor per engine its nodes offer (`engine/ray_fleet.py`); None: this host
    ray: str | None = None
    # most engines per kind on a Ray cluster: room for engines that join (the elastic
    # loop asks Ray's autoscaler for them, `engine/scaling.py`); None: those found
    max_engines: int | None = None
    # engines time each step from the profile instead of running the model (a loader,
    # `models.emulated.EmulatedLoader`): the scale benches' GPUs we do not have
    emulate: object | None = None
    # the transform waits for its window's outcomes and outputs them; the local driver
    # turns this off so windows do not wait for each other
    await_results: bool = True

    @property
    def accelerators(self) -> list[str]:
        """The profile names of the devices (each once): what the planner costs."""
        return list(dict.fromkeys(d.name for d in self.devices))

    def device(self, instance: str) -> Accelerator:
        return next(d for d in self.devices if d.id == instance)
