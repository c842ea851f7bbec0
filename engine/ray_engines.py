"""The scheduling core's engines on a Ray cluster: which of the core's device slots each
engine actor fills, and engines joining (a node came) and leaving (scaled in).

The core is built with room for the most engines a kind may have (`capacity`); a slot
without an engine is `Vacant` and out of the core's service. An engine that joins is
placed on its node, loads its models, and only then joins the core (`LiveCore.join`:
it takes its share of the queued work); one that leaves is drained first: only an idle
engine is scaled in (`Scaling`, `engine/scaling.py`), and the core gives whatever
step states it kept to the others (`LiveCore.leave`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from engine.link import DeviceLink
from engine.ray_device import RayDevice, start_all
from engine.ray_fleet import EngineSlot, engine_slots, resource_name
from scheduler.live import LiveCore
from sdaas.errors import brief

log = logging.getLogger(__name__)


class Vacant:
    """A slot of the core with no engine: out of service, so nothing is sent to it."""

    state, slot, resident, dispatch_s = "vacant", None, (), ()

    def send(self, command) -> None:
        log.debug("a command for a vacant engine slot: %s", command.kind)

    def start(self) -> Vacant:
        return self

    def stop(self, timeout: float | None = None) -> None:
        pass


MakeDevice = Callable[[DeviceLink, EngineSlot], RayDevice]
Joined = Callable[[int, EngineSlot | None], None]  # (core slot, its engine or None: left)


class RayEngines:
    """`links[i]` is the core's device i, of kind `kinds_of[i]`; `make_device` builds the
    engine for a slot (not started); `on_change(i, slot)` hears joins and leaves."""

    def __init__(self, core: LiveCore, links: list[DeviceLink], kinds_of: list[str],
                 make_device: MakeDevice, on_change: Joined | None = None):  # fmt: skip
        self.core, self.links, self.kinds_of = core, links, kinds_of
        self.make_device, self.on_change = make_device, on_change or (lambda i, slot: None)
        self.devices: list = [Vacant() for _ in links]
        for link, d in zip(links, self.devices, strict=True):
            link.connect(d)
        self.starting: set[int] = set()  # slots whose engine is being placed
        self._lock = threading.Lock()

    # -- the first engines -------------------------------------------------------------
    def start(self, slots: list[EngineSlot]) -> None:
        """Fill the core's slots kind by kind with these engines and start them all
        (each loads its models on its node, in parallel); the rest stay vacant."""
        chosen = []
        for slot in slots:
            i = self._vacant_of(slot.kind, exclude={i for i, _ in chosen})
            if i is None:
                break
            chosen.append((i, slot))
        for i, slot in chosen:
            self._fill(i, slot)
        start_all([self.devices[i] for i, _ in chosen])
        filled = {i for i, _ in chosen}
        for i in range(len(self.links)):
            if i not in filled:
                self.links[i].out_of_service = True
                self.core.leave(i)  # empty: nothing to give back

    def _fill(self, i: int, slot: EngineSlot) -> RayDevice:
        device = self.make_device(self.links[i], slot)
        self.devices[i] = device
        self.links[i].connect(device)
        self.on_change(i, slot)
        return device

    def _vacant_of(self, kind: str, exclude=()) -> int | None:
        return next((i for i, d in enumerate(self.devices) if isinstance(d, Vacant)
                     and self.kinds_of[i] == kind and i not in exclude
                     and i not in self.starting), None)  # fmt: skip

    # -- joining and leaving -----------------------------------------------------------
    def in_service(self, kind: str) -> list[int]:
        return [i for i in self.core.in_service() if self.kinds_of[i] == kind]

    def capacity(self, kind: str) -> int:
        return sum(k == kind for k in self.kinds_of)

    def grow(self, kind: str, n: int) -> int:
        """Place up to n more engines of `kind` on slots the cluster offers and no engine
        uses; each joins the core when it is ready. Returns how many were placed."""
        used = {d.slot for d in self.devices if d.slot is not None}
        free = [s for s in engine_slots([kind]) if s not in used]
        placed = 0
        with self._lock:
            for slot in free[:n]:
                i = self._vacant_of(kind)
                if i is None:
                    break
                self.starting.add(i)
                device = self._fill(i, slot)
                threading.Thread(target=self._join, args=(i, device), daemon=True,
                                 name=f"sdaas-join-{i}").start()  # fmt: skip
                placed += 1
        return placed

    def _join(self, i: int, device: RayDevice) -> None:
        try:
            device.start()
        except Exception as exc:  # noqa: BLE001 - the slot stays vacant, loudly
            log.error("engine %s did not join: %s", device.slot.name, brief(exc))
            self._vacate(i)
        else:
            self.links[i].rejoined()
            log.warning("engine %s joined on node %s", device.slot.name, device.slot.node_ip)
        finally:
            self.starting.discard(i)

    def shrink(self, i: int) -> None:
        """Engine i leaves: out of the core's service first (what it held goes to the
        others), then its actor stops."""
        link, device = self.links[i], self.devices[i]
        link.out_of_service = True
        self.core.leave(i)
        device.stop(5.0)
        log.warning("engine %s left (scaled in)", getattr(device.slot, "name", i))
        self._vacate(i)

    def _vacate(self, i: int) -> None:
        self.devices[i] = Vacant()
        self.links[i].connect(self.devices[i])
        self.on_change(i, None)

    def stop(self) -> None:
        for d in self.devices:
            d.stop(5.0)


def fleet_instances(spec, kinds: list[str]) -> tuple[list[EngineSlot], list]:
    """Join the spec's Ray cluster (`spec.ray`) and list the core's device instances:
    per kind, one per engine its nodes offer now, then vacant ones up to
    `spec.max_engines` (room for engines that join later). Returns (slots, instances)."""
    from dataclasses import replace

    from engine.ray_fleet import connect, offered

    connect(spec.ray, offered([d.name for d in spec.devices]))
    slots = engine_slots(kinds)
    if not slots:
        offer = ", ".join(f'"{resource_name(k)}": ENGINES' for k in kinds)
        raise RuntimeError(
            f"the Ray cluster at {spec.ray} offers no engine for {', '.join(kinds)}: start "
            f"its nodes with `ray start --resources '{{{offer}}}'`"
        )
    instances = []
    for kind in kinds:
        like = next(d for d in spec.devices if d.name == kind)
        mine = [s for s in slots if s.kind == kind]
        instances += [replace(like, instance=s.name) for s in mine]
        room = max(0, (spec.max_engines or 0) - len(mine))
        instances += [replace(like, instance=f"{kind}#vacant{len(instances) + n}")
                      for n in range(room)]  # fmt: skip
    return slots, instances
