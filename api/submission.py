"""What a POST of a job does once the request is a valid job, HTTP aside: the
idempotent submit between the job book and the broker.

A new key enters the job (within the tenant's in-flight quota) and sends it to the jobs
topic: 202 once the broker acknowledged it, 503 when it did not (the job leaves the
book again: withdrawn, it will not run). The same key with the same request is the
same job: a retry learns how a send still under way ends, and sends a job not known to
be on today's jobs topic again. The same key with another request is a conflict (409).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from api.job_book import JobBookGone
from api.problem import Problem
from sdaas.job_status import JobStatus

if TYPE_CHECKING:
    from api.front import Front


class Submission:
    def __init__(self, front: Front):
        self.front = front
        # jobs entered in the book whose send is not acknowledged yet: True once it is
        self.sending: dict[tuple[str, str], asyncio.Future] = {}

    async def submit(self, tenant: str, job_id: str, fingerprint: str, request: str) -> bool:
        """Accept the job whose `request` (the JSON for Kafka) has this fingerprint, or
        raise the Problem that refuses it. True when it was entered before (a retry)."""
        book, cfg = self.front.book, self.front.cfg
        if book.in_flight(tenant) >= cfg.max_in_flight and book.get(tenant, job_id) is None:
            raise Problem(
                429,
                f"in-flight quota: at most {cfg.max_in_flight} jobs per tenant without an outcome",
                retry_s=1,
            )
        try:
            earlier = book.accept(tenant, job_id, fingerprint, request)
        except JobBookGone:  # the operator is told why (log, /readyz)
            raise Problem(503, "the API cannot record new jobs now (its job book is gone): "
                          "nothing was queued; retry later", retry_s=30) from None  # fmt: skip
        if earlier is None:
            await self._send(tenant, job_id)
            self.front.metrics.jobs.labels(tenant, JobStatus.ACCEPTED.word).inc()
            return False
        if earlier != fingerprint:
            raise Problem(
                409,
                f"job {job_id!r} exists with a different request: use a new "
                "job id or Idempotency-Key",
            )
        first = self.sending.get((tenant, job_id))  # a retry while the first still sends
        if first is not None:
            if not await asyncio.shield(first):
                raise Problem(503, "the first request with this key could not queue the job; "
                              "retry", retry_s=1)  # fmt: skip
        elif book.needs_send(tenant, job_id, self.front.jobs_topic):
            # never acknowledged (its process stopped first), or by a broker that lost
            # it since: sent now (serving answers a job id once, should it be there)
            await self._send(tenant, job_id)
        return True

    async def _send(self, tenant: str, job_id: str) -> None:
        """The book's job onto the jobs topic. A job never acknowledged before leaves the
        book again when the broker does not take it (503: the producer dropped the
        record, it will not run; the client retries with the same key); one that was
        acknowledged before stays accepted (the broker watch sends it again)."""
        front = self.front
        was_acked = front.book.acked(tenant, job_id)
        sent = self.sending[(tenant, job_id)] = asyncio.get_running_loop().create_future()
        try:
            await front.send_job(tenant, job_id)
            sent.set_result(True)
        except Exception as exc:  # noqa: BLE001 - the client may retry with the same key
            if was_acked:
                sent.set_result(True)
                return
            front.book.forget(tenant, job_id)
            sent.set_result(False)  # after `forget`: a retry then starts afresh
            raise Problem(
                503,
                f"the broker did not take the job within {front.cfg.send_timeout_s:g} s "
                f"({type(exc).__name__}): it was withdrawn and will not run; retry with the "
                "same Idempotency-Key",
                retry_s=1,
            ) from None
        finally:
            if not sent.done():
                sent.set_result(False)
            del self.sending[(tenant, job_id)]
