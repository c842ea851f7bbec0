"""infaas: INFaaS-style model-less serving (ATC '21). At admission it picks the cheapest
variant, in accelerator dollars (predicted seconds x the kind's price), whose predicted
latency meets the SLO, ignoring queues; if none does, the fastest. Then FCFS."""

from __future__ import annotations

import math

from scheduler.policy import Policy, PolicyKey, register
from scheduler.queues import HeapQueue


@register
class Infaas(Policy):
    key = PolicyKey.INFAAS
    stands_for = "INFaaS: cheapest variant meeting the SLO, then FCFS"

    def bind(self, sim) -> None:
        super().bind(sim)
        self.price = [sim.catalog.price_per_hour[k] for k in sim.ck]

    def place(self, j: int, t: float) -> int | None:
        sim = self.sim
        opts = sim.options.planned[sim.cls[j]]
        slo = sim.latency_slo_s[sim.cls[j]]
        cheap = (math.inf, -1)
        fast = (math.inf, -1)
        for k, o in enumerate(opts):
            if o is None:
                continue
            if o.pred_s <= slo:
                cheap = min(cheap, (o.pred_s * self.price[k], k))
            fast = min(fast, (o.pred_s, k))
        k = cheap[1] if cheap[1] >= 0 else fast[1]
        if k < 0:
            return None
        sim.assign(j, k, opts[k])
        return k

    def make_queue(self, kind: int) -> HeapQueue:
        return HeapQueue(self.sim.arrival.__getitem__)
