"""Record schemas shared across folders: what a profile row is (written by `pipelines/`,
read by `predictor/` and `scheduler/`). Versioned; the Parquet schema is explicit so a
reader never has to guess types from data."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Literal

import pyarrow as pa

from sdaas.job_request import JobRequest

PROFILE_SCHEMA_VERSION = 3  # 2: repeats, spread, load_avg; 3: prompt features


def model_key(name: str, version: str) -> str:
    """The one spelling of a model version's identity, `name@version`: registry
    messages, serving's model table, latency corrections and profile shards all use it."""
    return f"{name}@{version}"


# measured: timed here; published: a figure from a cited source; derived: computed from
# published figures by a stated rule; assumed: a curve we made up and say so.
ProfileSource = Literal["measured", "published", "derived", "assumed"]


@dataclass(frozen=True)
class ProfileRecord:
    """One profiled cell: a model at a step count on an accelerator, for one prompt and seed.

    latency_s: warm wall time of one generate() call for the whole batch.
    per_step_s: mean denoising-step time inside that call (from the step hook).
    clip_score: mean CLIP score of the batch's images; NaN where not measured.
    prompt_id: salted hash, never the prompt.
    prompt_tokens: `sdaas.privacy.prompt_tokens` of the prompt (-1 when unknown).
    repeats, spread: how many timed calls `latency_s` is the median of, and their
    relative half-range (NaN for one call): a cell still spread after its repeat budget
    was measured on a noisy host.
    load_avg: the host's 1-minute load average per core when the cell ran (NaN unknown).
    prompt_objects, prompt_basis, prompt_pc0..: what the CLIP predictor may know of the
    prompt (`predictor.prompt_features`): how many objects it names (-1 unknown), and its
    CLIP text embedding's coordinates on the sweep's PCA basis (id `prompt_basis`, written
    beside the rows; "" and NaN when unknown). Numbers only, never the text.
    """

    model: str
    model_version: str
    accelerator: str
    steps: int
    height: int
    width: int
    batch_size: int
    guidance_scale: float
    prompt_id: str
    prompt_tokens: int
    seed: int
    latency_s: float
    per_step_s: float
    clip_score: float
    source: str
    host: str
    ts: float
    sdaas_version: str
    citation: str = ""
    repeats: int = 1
    spread: float = math.nan
    load_avg: float = math.nan
    prompt_objects: int = -1
    prompt_basis: str = ""
    prompt_pc0: float = math.nan
    prompt_pc1: float = math.nan
    prompt_pc2: float = math.nan
    prompt_pc3: float = math.nan
    prompt_pc4: float = math.nan
    prompt_pc5: float = math.nan
    prompt_pc6: float = math.nan
    prompt_pc7: float = math.nan

    def to_row(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Plan:
    """The planner's answer for one job: what to run where, and what it predicts.

    When `feasible` is false the model/accelerator/steps fields hold the best offer (or are
    empty when there is none) and `reason` says why and what the best offer is.
    """

    job_id: str
    model: str
    model_version: str
    accelerator: str
    steps: int
    predicted_latency_s: float
    predicted_clip: float
    feasible: bool
    reason: str = ""


# 2: `device`, the instance a job ran on; 3: `batch_size`; 4: `restarts`
JOB_SCHEMA_VERSION = 4


@dataclass(frozen=True)
class JobResult:
    """What a tenant gets back for one job (the results topic and the result store).

    status: `done` (ran), `rejected` (admission control or an infeasible plan: `error`
    says why, right away; or dropped after waiting, when it could no longer meet its
    SLO), `failed` (the model raised: `error`) or `cancelled`. Times are seconds:
    `queued_s` from submission to the start of the run, `run_s` the model call,
    `jct_s` submission to result. The prompt is never part of a result.
    """

    job_id: str
    tenant: str
    status: str
    model: str = ""
    model_version: str = ""
    accelerator: str = ""
    steps: int = 0
    predicted_latency_s: float = 0.0
    predicted_clip: float = 0.0
    latency_slo_s: float = 0.0
    min_clip: float = 0.0
    queued_s: float = 0.0
    run_s: float = 0.0
    jct_s: float = 0.0
    clip_score: float | None = None
    latency_slo_met: bool = False
    clip_slo_met: bool = False
    image_uri: str = ""
    error: str = ""
    policy: str = ""
    window: str = ""  # the window the job was scheduled in
    run_order: int = -1  # position in its accelerator's run order within the window
    latency_correction: float = 1.0  # observed/predicted factor applied to the prediction
    device: str = ""  # the device instance (e.g. cuda:3) within `accelerator`
    batch_size: int = 1  # the most jobs it shared a denoising step with (itself included)
    # times it ran again from step 0: its engine crashed, or left (its node died)
    restarts: int = 0
    schema_version: int = JOB_SCHEMA_VERSION

    def to_row(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Job:
    """One job from request to outcome: the one record serving carries. The request;
    where it came from and when it arrived (server-side); then what the scheduling core
    decided for it (model, accelerator and device, steps, predictions). The simulator
    holds the same fields as arrays, index = job. A tenant gets `result()`, a
    `JobResult`, which never holds the prompt."""

    request: JobRequest
    source: str  # topic/partition/offset@broker-ms: the record's identity
    arrival_ts: float  # server-side: broker timestamp, at most the receive time
    model_key: str = ""  # model_key(name, version)
    accelerator: str = ""  # profile name
    device: str = ""  # the device instance (`Accelerator.id`)
    steps: int = 0
    predicted_s: float = 0.0
    predicted_clip: float = 0.0
    latency_correction: float = 1.0
    window: str = ""

    def result(self, status: str, policy: str, **outcome) -> JobResult:
        """What the tenant is told: the plan fields of this record plus `outcome`."""
        r = self.request
        model, _, version = self.model_key.rpartition("@") if self.model_key else ("", "", "")
        return JobResult(
            r.job_id,
            r.tenant,
            status,
            model,
            version,
            self.accelerator,
            self.steps,
            self.predicted_s,
            self.predicted_clip,
            r.latency_slo_s,
            r.min_clip,
            policy=policy,
            window=self.window,
            latency_correction=self.latency_correction,
            device=self.device,
            **outcome,
        )


PROFILE_ARROW_SCHEMA = pa.schema(
    [
        pa.field("model", pa.string(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("accelerator", pa.string(), nullable=False),
        pa.field("steps", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("batch_size", pa.int32(), nullable=False),
        pa.field("guidance_scale", pa.float32(), nullable=False),
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("prompt_tokens", pa.int32(), nullable=False),
        pa.field("seed", pa.int64(), nullable=False),
        pa.field("latency_s", pa.float64(), nullable=False),
        pa.field("per_step_s", pa.float64(), nullable=False),
        pa.field("clip_score", pa.float64(), nullable=True),
        pa.field("source", pa.string(), nullable=False),
        pa.field("host", pa.string(), nullable=False),
        pa.field("ts", pa.float64(), nullable=False),
        pa.field("sdaas_version", pa.string(), nullable=False),
        pa.field("citation", pa.string(), nullable=False),
        pa.field("repeats", pa.int32(), nullable=True),  # v2; null in v1 files
        pa.field("spread", pa.float64(), nullable=True),
        pa.field("load_avg", pa.float64(), nullable=True),
        pa.field("prompt_objects", pa.int32(), nullable=True),  # v3; null before
        pa.field("prompt_basis", pa.string(), nullable=True),
        pa.field("prompt_pc0", pa.float64(), nullable=True),
        pa.field("prompt_pc1", pa.float64(), nullable=True),
        pa.field("prompt_pc2", pa.float64(), nullable=True),
        pa.field("prompt_pc3", pa.float64(), nullable=True),
        pa.field("prompt_pc4", pa.float64(), nullable=True),
        pa.field("prompt_pc5", pa.float64(), nullable=True),
        pa.field("prompt_pc6", pa.float64(), nullable=True),
        pa.field("prompt_pc7", pa.float64(), nullable=True),
    ],
    metadata={"sdaas.profile_schema_version": str(PROFILE_SCHEMA_VERSION)},
)

assert [f.name for f in fields(ProfileRecord)] == PROFILE_ARROW_SCHEMA.names


def profile_table(records: list[ProfileRecord]) -> pa.Table:
    """Records as an Arrow table with the declared schema (types enforced, not inferred)."""
    cols = {name: [getattr(r, name) for r in records] for name in PROFILE_ARROW_SCHEMA.names}
    return pa.Table.from_pydict(cols, schema=PROFILE_ARROW_SCHEMA)
