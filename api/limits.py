"""Per-tenant admission at the door: a token bucket on submissions and a bound on the
jobs in flight. Both answer 429 with when to retry, so one tenant's burst never takes
the service from the others."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field


@dataclass
class TokenBuckets:
    """`rate` submissions per second per tenant, bursts of up to `burst`."""

    rate: float
    burst: float
    clock: object = time.monotonic
    _state: dict[str, tuple[float, float]] = field(default_factory=dict)  # tokens, at

    def take(self, tenant: str) -> float:
        """0 when a submission may go now (a token is taken), else seconds to wait."""
        now = self.clock()
        tokens, at = self._state.get(tenant, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            self._state[tenant] = (tokens - 1.0, now)
            return 0.0
        self._state[tenant] = (tokens, now)
        return (1.0 - tokens) / self.rate


def retry_after(seconds: float) -> str:
    """A Retry-After header value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
