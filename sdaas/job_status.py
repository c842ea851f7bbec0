"""One job status for the whole system: the simulator's per-job arrays, the live core,
the serving runtime's outcomes, the API's job book and the benches all speak it.

An `IntEnum`, so the simulator keeps plain integer arrays (numpy compares them to a
member directly) and the API keeps words (`word`, `from_word`). A job is `PENDING`
until it has its outcome; where a pending job is (the API's view: accepted by the
front door, planned by the core, running on a device) is `ACCEPTED`, `PLANNED`,
`RUNNING`. Every arrived job ends in exactly one outcome.
"""

from __future__ import annotations

import enum


class JobStatus(enum.IntEnum):
    PENDING = 0  # arrived, no outcome yet (the core does not say where it is)
    DONE = 1  # ran to its image
    REJECTED = 2  # refused at admission (or no accelerator can serve it)
    DROPPED = 3  # refused after waiting: it could no longer meet its SLO
    CANCELLED = 4  # the tenant cancelled it
    FAILED = 5  # the device could not run it (the model raised, or the device crashed)
    ACCEPTED = 6  # pending: acknowledged by the front door, not yet seen by serving
    PLANNED = 7  # pending: placed and queued by the core
    RUNNING = 8  # pending: its steps run on a device

    @property
    def word(self) -> str:
        """What the API and the stored results call it."""
        return self.name.lower()

    @property
    def ended(self) -> bool:
        return JobStatus.DONE <= self <= JobStatus.FAILED

    @property
    def answer(self) -> JobStatus:
        """The outcome a tenant is told: a dropped job is a rejected one (its error says
        it was dropped after waiting)."""
        return JobStatus.REJECTED if self is JobStatus.DROPPED else self

    @classmethod
    def from_word(cls, word: str) -> JobStatus:
        return cls[word.upper()]


# the outcomes a tenant can get, as words: what the result store and the job book hold
OUTCOMES = tuple(s.word for s in JobStatus if s.ended and s.answer is s)
# where an open job can be, in order (the job book never moves a job backwards)
PROGRESS = tuple(s.word for s in (JobStatus.ACCEPTED, JobStatus.PLANNED, JobStatus.RUNNING))
