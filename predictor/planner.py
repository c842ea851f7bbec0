"""The planner: a job's style and SLOs -> (model, accelerator, steps), or an early no.

For every registered (model, accelerator, resolution) the predictors' curves over the
model's step range are computed once, when the planner is built; planning a job is then
array look-ups. The rule is `scheduler/planning_rule.py` (the simulator's too): per
candidate curve the cheapest step count meeting `min_clip` is the first one on the
(monotone) CLIP curve at or above it; its predicted latency plus the accelerator's
backlog must fit the latency SLO. Among feasible candidates the shortest predicted job
wins (ties: the larger CLIP margin). The CLIP curves are what a plan can promise: the
CLIP predictor's curve less its per-model margin for prompts it never saw
(`training.clip_margins`: 95 % of unseen prompts reach it), so a plan's `predicted_clip`
is a bound a job can be held to, not a mean that half of the jobs miss.

Prompt-aware promises: given a job's `PromptFeatures` (or its prompt and a featurizer), and
a prompt-aware CLIP predictor (`sdaas-clip-prompt`), the CLIP curves of that job are the
prompt-aware prediction less its margin at each profiled step count (held up to the next
one, so such jobs are planned at profiled step counts), calibrated by replaying this
planning rule on captions and seeds the predictor never saw
(`training.prompt_clip_margins`); computed once per request: one LightGBM call on a
prebuilt numeric matrix with one row per model and profiled step count, cached per
prompt features. A model the prompt-aware predictor has no margins for keeps its
prompt-blind curve. Without features, plans are exactly the prompt-blind ones.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from models.card import ModelCard
from models.registry import Registry
from predictor.features import add_derived_columns
from predictor.latency_correction import factor_at
from predictor.prompt_features import PROMPT_FEATURES, PromptFeatures
from predictor.store import PredictorStoreError, load_predictor
from predictor.tracking import CLIP_MODEL, LATENCY_MODEL, PROMPT_CLIP_MODEL
from predictor.training import CLIP_COVERAGE
from scheduler.planning_rule import fewest_steps, shortest
from sdaas.errors import InvalidInputError
from sdaas.limits import MAX_PROMPT_TOKENS, latency_slo_problem
from sdaas.records import Plan, model_key

# CLIP depends a little on prompt length; curves are precomputed for these token counts
# and a job uses the nearest.
TOKEN_BUCKETS = (4, 8, 12, 16, 24, 32, 48, 77)
DEFAULT_TOKENS = 12


@dataclass(frozen=True)
class ModelOption:
    """What the planner needs of a model: a card, or a reference model for the simulator."""

    name: str
    version: str
    styles: tuple[str, ...]
    steps_min: int
    steps_max: int
    resolutions: tuple[tuple[int, int], ...]
    guidance_scale: float
    accelerators: tuple[str, ...]  # accelerator names this model may run on

    @classmethod
    def from_card(cls, card: ModelCard, accelerators: list[str]) -> ModelOption:
        usable = tuple(a for a in accelerators if card.runs_on(a))
        return cls(
            card.name,
            card.version,
            tuple(card.styles),
            card.steps.min,
            card.steps.max,
            tuple(card.resolution_pairs),
            card.guidance_scale,
            usable,
        )


@dataclass
class _StyleTable:
    """Stacked curves of every candidate serving one style at one resolution."""

    labels: list[tuple[ModelOption, str]]  # (model, accelerator) per row
    accel_index: dict[str, list[int]]
    steps: np.ndarray  # (S,) the global step grid 1..max
    latency: np.ndarray  # (n, S), +inf outside a model's step range
    clip: np.ndarray  # (n_buckets, n, S), -inf outside a model's step range


@dataclass
class _PromptTable:
    """The prompt-aware CLIP predictor's input for one style table, prompt columns left to
    fill: one row per (distinct model, profiled step count); where each promise lands."""

    x: np.ndarray  # (rows, features) numeric, categorical columns as category codes
    margin: np.ndarray  # (rows,) the promise margin at that model and step count
    row_of: np.ndarray  # (models * S,) which row of x each (model, step) promises; -1: none
    label_model: np.ndarray  # (n,) distinct-model index of each table row
    n_models: int
    blind: np.ndarray  # (n,) bool: rows whose model the predictor has no promise for


PROMPT_CACHE = 4096  # prompt curves kept (a job is planned more than once: admit, place)


def numeric_frame(spec, df: pd.DataFrame) -> np.ndarray:
    """`spec.frame(df)` as a float matrix, categoricals as their codes (missing: NaN):
    what LightGBM reads, without the DataFrame (one-row predicts from numpy are ~25x
    faster)."""
    frame = spec.frame(df)
    cols = []
    for f in spec.features:
        if f in spec.categorical:
            codes = frame[f].cat.codes.to_numpy(dtype=float)
            cols.append(np.where(codes < 0, np.nan, codes))
        else:
            cols.append(frame[f].to_numpy(dtype=float))
    return np.column_stack(cols)


class Planner:
    """headroom: plan against `latency_slo_s * (1 - headroom)`, leaving room for the
    run-to-run noise of real latencies around the prediction (0.1 = 10 %)."""

    def __init__(
        self,
        options: list[ModelOption],
        latency_predictor,
        clip_predictor,
        *,
        headroom: float = 0.0,
        batch_sizes: tuple[int, ...] = (1,),
        prompt_clip=None,
        featurizer=None,
        blind_step_margins: bool = False,
    ):
        """prompt_clip: the prompt-aware CLIP predictor (None: prompt-blind plans only);
        featurizer: a `PromptFeaturizer` on its basis, so `plan(prompt=...)` works;
        blind_step_margins: prompt-blind promises take the CLIP predictor's per-step,
        planned-job margins (`FeatureSpec.margin_at`) instead of its per-model margin
        (off: plans as before)."""
        if not options:
            raise InvalidInputError("no model registered: register one before planning")
        if not 0.0 <= headroom < 1.0:
            raise InvalidInputError(f"headroom: {headroom!r}: must be in [0, 1)")
        self.headroom = headroom
        self.options = options
        # expected batch occupancies planned for (a batch's members finish together: the
        # predicted run time of a job in a batch of b is the batch's)
        self.batch_sizes = tuple(sorted({1, *batch_sizes}))
        if any(not isinstance(b, int) or b < 1 for b in self.batch_sizes):
            raise InvalidInputError(f"batch_sizes: {batch_sizes!r}: each an integer >= 1")
        self.styles = sorted({s for o in options for s in o.styles})
        # which predictions observed run times are compared with (a retrained one: none)
        self.predictor_version = str(getattr(latency_predictor, "version", ""))
        spec = getattr(latency_predictor, "spec", None)
        # model key -> step counts its latency was measured at (where probes compare best)
        self.profiled_steps: dict[str, list[int]] = dict(getattr(spec, "profiled_steps", {}))
        # model key -> batch sizes its latency was measured at (the batches serving forms)
        self.profiled_batches: dict[str, list[int]] = {
            k: [b for b in v if b in self.batch_sizes]
            for k, v in getattr(spec, "profiled_batches", {}).items()
        }
        self._tables: dict[tuple[str, tuple[int, int]], _StyleTable] = {}
        # (style, resolution, batch size > 1) -> latency rows in the table's label order
        self._batch_latency: dict[tuple[str, tuple[int, int], int], np.ndarray] = {}
        # model key -> how far below the CLIP prediction its plans promise
        self.clip_margins: dict[str, float] = {}
        self.prompt_clip = prompt_clip
        self.featurizer = featurizer
        basis = getattr(prompt_clip, "prompt_basis", None)
        self.prompt_basis_id = basis.id if basis is not None else ""
        # model key -> how far below the prompt-aware prediction its plans promise
        self.prompt_clip_margins: dict[str, float] = {}
        self._prompt_tables: dict[tuple[str, tuple[int, int]], _PromptTable] = {}
        self._prompt_cache: OrderedDict = OrderedDict()
        self.blind_step_margins = blind_step_margins
        self._build(latency_predictor, clip_predictor)
        if prompt_clip is not None:
            self._build_prompt_tables(prompt_clip)

    # -- precomputation -------------------------------------------------------------------
    def _curve_frame(
        self, o: ModelOption, acc: str, res: tuple[int, int], steps: np.ndarray, batch: int = 1
    ):
        """Profile-shaped rows for one curve; derived features come from the same
        `add_derived_columns` the training rows went through."""
        n = len(steps)
        return add_derived_columns(
            pd.DataFrame(
                {
                    "model": [o.name] * n,
                    "model_version": [o.version] * n,
                    "accelerator": [acc] * n,
                    "steps": steps,
                    "height": [res[1]] * n,
                    "width": [res[0]] * n,
                    "batch_size": [batch] * n,
                    "guidance_scale": [o.guidance_scale] * n,
                    "prompt_tokens": [DEFAULT_TOKENS] * n,
                }
            )
        )

    def _build(self, latency_predictor, clip_predictor) -> None:
        max_steps = max(o.steps_max for o in self.options)
        grid = np.arange(1, max_steps + 1)
        keys = {(s, r) for o in self.options for s in o.styles for r in o.resolutions}
        self._clip_spec = clip_predictor.spec  # its floors, for a refusal's reason
        for style, res in sorted(keys):
            labels, lat_rows, clip_rows = [], [], []
            batch_rows: dict[int, list[np.ndarray]] = {b: [] for b in self.batch_sizes[1:]}
            for o in self.options:
                if style not in o.styles or res not in o.resolutions:
                    continue
                steps = grid[(grid >= o.steps_min) & (grid <= o.steps_max)]
                lo, hi = o.steps_min - 1, o.steps_max
                # the CLIP a plan promises: the prediction less the model's margin for
                # prompts the predictor never saw (none for published curves)
                key = model_key(o.name, o.version)
                margin = promise_margin(clip_predictor, key)
                self.clip_margins[key] = margin
                # never above what a new caption's image reaches there 95 % of the time
                floor = clip_predictor.spec.floor_at(key, steps)
                clip_by_bucket = []
                for tokens in TOKEN_BUCKETS:
                    frame = self._curve_frame(
                        o, o.accelerators[0] if o.accelerators else "", res, steps
                    )
                    frame["prompt_tokens"] = tokens
                    c = np.full(len(grid), -np.inf)
                    if self.blind_step_margins:
                        c[lo:hi] = clip_predictor.predict(frame) - clip_predictor.spec.margin_at(
                            key, steps
                        )
                    else:
                        c[lo:hi] = clip_predictor.predict(frame) - margin
                    c[lo:hi] = np.minimum(c[lo:hi], floor)
                    clip_by_bucket.append(c)
                for acc in o.accelerators:
                    lat = np.full(len(grid), np.inf)
                    lat[lo:hi] = latency_predictor.predict(self._curve_frame(o, acc, res, steps))
                    for b, rows in batch_rows.items():
                        lat_b = np.full(len(grid), np.inf)
                        frame = self._curve_frame(o, acc, res, steps, b)
                        lat_b[lo:hi] = latency_predictor.predict(frame)
                        rows.append(lat_b)
                    labels.append((o, acc))
                    lat_rows.append(lat)
                    clip_rows.append(clip_by_bucket)
            if not labels:
                continue
            for b, rows in batch_rows.items():
                self._batch_latency[(style, res, b)] = np.vstack(rows)
            accel_index: dict[str, list[int]] = {}
            for i, (_, acc) in enumerate(labels):
                accel_index.setdefault(acc, []).append(i)
            self._tables[(style, res)] = _StyleTable(
                labels,
                accel_index,
                grid,
                np.vstack(lat_rows),
                np.stack([np.vstack([c[b] for c in clip_rows]) for b in range(len(TOKEN_BUCKETS))]),
            )

    def _build_prompt_tables(self, predictor) -> None:
        """A prompt-aware promise stands only where it was measured: at a model's profiled
        step counts, with that step count's margin (`training.prompt_clip_margins`
        calibrates them there). Between them a curve holds the promise of the profiled
        step count below (more steps do not lower CLIP), so the planning rule, which takes
        the fewest steps reaching min CLIP, plans prompt-aware jobs at profiled step
        counts only; below the first one nothing is promised. A model the predictor has
        no margins for (not profiled with prompt features) keeps its prompt-blind curve."""
        spec = predictor.spec
        if spec.target_mode != "raw" or spec.target != "clip_score":
            raise InvalidInputError("prompt_clip: not a CLIP predictor on a raw target")
        self._prompt_cols = [spec.features.index(f) for f in PROMPT_FEATURES]
        self._prompt_booster = predictor.model.booster_
        for key, t in self._tables.items():
            res = key[1]
            models: list[ModelOption] = []
            for o, _ in t.labels:
                if o not in models:
                    models.append(o)
            S = len(t.steps)
            frames, margin, row_of = [], [], np.full(len(models) * S, -1)
            blind_models = set()
            n_rows = 0
            for i, o in enumerate(models):
                mk = model_key(o.name, o.version)
                profiled = np.array(
                    sorted(
                        s
                        for s in spec.profiled_steps.get(mk, [])
                        if o.steps_min <= s <= o.steps_max and s in spec.step_margin.get(mk, {})
                    ),
                    dtype=int,
                )
                if not len(profiled):
                    blind_models.add(i)
                    continue
                m = spec.margin_at(mk, profiled)
                self.prompt_clip_margins[mk] = promise_margin(predictor, mk)
                frames.append(self._curve_frame(o, o.accelerators[0], res, profiled))
                margin.append(m)
                steps = t.steps[(t.steps >= o.steps_min) & (t.steps <= o.steps_max)]
                below = np.searchsorted(profiled, steps, side="right") - 1
                row_of[i * S + steps - 1] = np.where(below >= 0, n_rows + below, -1)
                n_rows += len(profiled)
            n_cols = len(spec.features)
            x = (
                numeric_frame(spec, pd.concat(frames, ignore_index=True))
                if frames
                else np.zeros((0, n_cols))
            )
            label_model = np.array([models.index(o) for o, _ in t.labels])
            self._prompt_tables[key] = _PromptTable(
                x,
                np.concatenate(margin) if margin else np.zeros(0),
                row_of,
                label_model,
                len(models),
                np.isin(label_model, sorted(blind_models)),
            )

    def prompt_curves(
        self, style: str, resolution: tuple[int, int], features: PromptFeatures
    ) -> np.ndarray:
        """(n, S) the CLIP a plan promises a job with these prompt features, per table
        row and step: the prompt-aware prediction less its margin at the profiled step
        count at or below (-inf below the first and off range; the prompt-blind curve at
        the prompt's token count for a model without prompt-aware margins)."""
        key = (style, tuple(resolution), features.key())
        hit = self._prompt_cache.get(key)
        if hit is not None:
            self._prompt_cache.move_to_end(key)
            return hit
        pt = self._prompt_tables[(style, tuple(resolution))]
        if len(pt.x):
            x = pt.x.copy()
            x[:, self._prompt_cols] = list(features.columns().values())
            # one thread: a few rows, and no waiting on a second core another job holds
            pred = self._prompt_booster.predict(x, num_threads=1) - pt.margin
            by_model = np.where(pt.row_of >= 0, pred[pt.row_of], -np.inf)
        else:
            by_model = np.full(len(pt.row_of), -np.inf)
        out = by_model.reshape(pt.n_models, -1)[pt.label_model]
        if pt.blind.any():
            t = self._tables[(style, tuple(resolution))]
            bucket = int(np.abs(np.asarray(TOKEN_BUCKETS) - features.tokens).argmin())
            out[pt.blind] = t.clip[bucket][pt.blind]
        self._prompt_cache[key] = out
        if len(self._prompt_cache) > PROMPT_CACHE:
            self._prompt_cache.popitem(last=False)
        return out

    def _features_for(self, prompt_features, prompt) -> PromptFeatures | None:
        """The features a plan uses: given, or computed from `prompt` by the featurizer;
        None (prompt-blind) without a prompt-aware predictor."""
        if self.prompt_clip is None:
            return None
        if prompt_features is None and prompt is not None and self.featurizer is not None:
            prompt_features = self.featurizer.one(prompt)
        if prompt_features is None:
            return None
        if not isinstance(prompt_features, PromptFeatures):
            raise InvalidInputError(
                f"prompt_features: a {type(prompt_features).__name__}: give PromptFeatures"
            )
        if prompt_features.basis and prompt_features.basis != self.prompt_basis_id:
            raise InvalidInputError(
                f"prompt_features: on basis {prompt_features.basis}; the prompt-aware CLIP "
                f"predictor reads basis {self.prompt_basis_id}: compute them with its featurizer"
            )
        return prompt_features

    @property
    def resolutions(self) -> dict[str, list[tuple[int, int]]]:
        """style -> the resolutions it is served at (what a request may ask for)."""
        out: dict[str, list[tuple[int, int]]] = {}
        for s, r in sorted(self._tables):
            out.setdefault(s, []).append(r)
        return out

    def curves(self, style: str, resolution: tuple[int, int]) -> _StyleTable:
        return self._tables[(style, resolution)]

    def probe_steps(self, option: ModelOption) -> tuple[int, int]:
        """The fewest and most steps `option` was profiled at within its range (its
        range's ends when unknown): where a measured run best tests the profile, with no
        extrapolation in the prediction it is compared with."""
        key = model_key(option.name, option.version)
        inside = [
            s for s in self.profiled_steps.get(key, []) if option.steps_min <= s <= option.steps_max
        ]
        return (min(inside), max(inside)) if inside else (option.steps_min, option.steps_max)

    def predicted_s(
        self, key: str, accelerator: str, steps: int, resolution, batch_size: int = 1
    ) -> float:
        """The predictor's own (uncorrected) run time of model `key` on `accelerator` at
        `steps` and `resolution`: what an observed run time is compared with."""
        for (style, res), t in self._tables.items():
            if res != tuple(resolution):
                continue
            for i, (o, acc) in enumerate(t.labels):
                if acc == accelerator and model_key(o.name, o.version) == key:
                    return float(self._latency(style, res, batch_size)[i, steps - 1])
        raise InvalidInputError(f"no curve for {key} on {accelerator} at {resolution}")

    # -- planning -------------------------------------------------------------------------
    def _latency(self, style: str, res: tuple[int, int], batch_size: int) -> np.ndarray:
        if batch_size == 1:
            return self._tables[(style, res)].latency
        return self._batch_latency[(style, res, batch_size)]

    def _validate(
        self, style, latency_slo_s, min_clip, resolution, prompt_tokens, batch_size=1
    ) -> tuple[int, int]:
        problems = []
        if batch_size not in self.batch_sizes:
            problems.append(
                f"batch_size: {batch_size!r}: planned for " + ", ".join(map(str, self.batch_sizes))
            )
        if not isinstance(latency_slo_s, int | float) or not math.isfinite(latency_slo_s):
            problems.append(f"latency_slo_s: {latency_slo_s!r}: must be a finite number")
        elif why := latency_slo_problem(latency_slo_s):
            problems.append(f"latency_slo_s: {latency_slo_s!r}: {why}")
        if prompt_tokens is not None and not (
            isinstance(prompt_tokens, int) and 0 <= prompt_tokens <= MAX_PROMPT_TOKENS
        ):
            problems.append(
                f"prompt_tokens: {prompt_tokens!r}: must be an integer in 0..{MAX_PROMPT_TOKENS}"
            )
        if not isinstance(min_clip, int | float) or not (0.0 <= min_clip <= 100.0):
            problems.append(f"min_clip: {min_clip!r}: must be a number in [0, 100]")
        if style not in self.styles:
            problems.append(f"style: {style!r}: unknown; served styles: {', '.join(self.styles)}")
        if problems:
            raise InvalidInputError("invalid plan request: " + "; ".join(problems))
        served = sorted({r for (s, r) in self._tables if s == style})
        if resolution is None:
            return served[0]
        if tuple(resolution) not in served:
            raise InvalidInputError(
                f"resolution: {resolution[0]}x{resolution[1]}: style {style!r} is served at "
                + ", ".join(f"{w}x{h}" for w, h in served)
            )
        return tuple(resolution)

    def plan(
        self,
        style: str,
        latency_slo_s: float,
        min_clip: float,
        *,
        resolution: tuple[int, int] | None = None,
        prompt_tokens: int | None = None,
        backlog_s: Mapping[str, float] | None = None,
        latency_scale: Mapping[tuple[str, str], float] | None = None,
        job_id: str = "",
        batch_size: int = 1,
        prompt_features: PromptFeatures | None = None,
        prompt: str | None = None,
    ) -> Plan:
        """The plan's `predicted_latency_s` is the job's own run time; `backlog_s` (seconds
        of wait per accelerator) counts toward the SLO and the choice, and the reason of an
        infeasible plan quotes wait + run.

        latency_scale: (`name@version`, accelerator) -> observed/predicted run-time
        ratio (a number, or a `Correction` read at the candidate's step count), applied
        to that candidate's predicted latency (serving's online correction of the drift
        between profiling and serving); missing pairs are 1.

        batch_size: the expected batch occupancy (one of `batch_sizes`): predictions are
        of a batch of that many such jobs, which finish together.

        prompt_features (or prompt, with a featurizer): promise the prompt-aware bound
        (`prompt_curves`) instead of the prompt-blind one; ignored without a prompt-aware
        predictor. The prompt is used for its features only, never kept."""
        res = self._validate(style, latency_slo_s, min_clip, resolution, prompt_tokens, batch_size)
        features = self._features_for(prompt_features, prompt)
        t, clip, has, first, lat = self._candidates(
            style, res, min_clip, prompt_tokens, latency_scale, batch_size, features
        )
        rows = np.arange(len(t.labels))
        own = lat  # the job's own predicted run time: what the plan reports
        wait = np.zeros(len(t.labels))
        if backlog_s:
            for acc, b in backlog_s.items():
                idx = t.accel_index.get(acc)
                if idx:
                    wait[idx] = b
            lat = lat + wait
        margin = clip[rows, first] - min_clip
        budget = latency_slo_s * (1.0 - self.headroom)
        feasible = has & (lat <= budget)
        if feasible.any():
            best = shortest(lat, margin, np.flatnonzero(feasible))
            return self._plan(
                job_id, t, best, first[best], own[best], clip[best, first[best]], True, ""
            )
        if not has.any():
            best_row, best_col = np.unravel_index(np.argmax(clip), clip.shape)
            o, acc = t.labels[best_row]
            pt = self._prompt_tables.get((style, res)) if features is not None else None
            aware = pt is not None and not pt.blind[best_row]
            key = model_key(o.name, o.version)
            if aware:  # the margin of the profiled step count the best promise stands at
                at = pt.row_of[pt.label_model[best_row] * len(t.steps) + best_col]
                margin = float(pt.margin[at]) if at >= 0 else 0.0
            else:
                margin = self.clip_margins.get(key, 0.0)
            mean = "this prompt's predicted mean" if aware else "mean"
            share = f"{CLIP_COVERAGE * 100:.0f} %"
            floor = self._clip_spec.floor_at(key, [t.steps[best_col]])[0]
            if not aware and clip[best_row, best_col] >= floor:  # the floor, not the margin
                promised = (
                    f" (promised: the CLIP every image of {share} of its profiled "
                    "captions there reached)"
                )
            elif margin:
                promised = f" (promised for {share} of prompts: {mean} less {margin:.1f})"
            else:
                promised = ""
            reason = (
                f"min CLIP {min_clip:g} unreachable for style {style}: best "
                f"{clip[best_row, best_col]:.1f} at {t.steps[best_col]} steps on {o.name}"
                f"{promised}"
            )
            return self._plan(
                job_id,
                t,
                best_row,
                best_col,
                self._latency(style, res, batch_size)[best_row, best_col],
                clip[best_row, best_col],
                False,
                reason,
            )
        cand = np.flatnonzero(has)
        best = cand[np.argmin(lat[cand])]
        o, acc = t.labels[best]
        room = f" with {self.headroom:.0%} headroom" if self.headroom else ""
        split = f" (queued {wait[best]:.2f} s + run {own[best]:.2f} s)" if wait[best] else ""
        reason = (
            f"fastest option meeting min CLIP {min_clip:g} needs {lat[best]:.2f} s{split} > "
            f"{latency_slo_s:g} s{room} ({o.name} on {acc} at {t.steps[first[best]]} steps)"
        )
        return self._plan(
            job_id, t, best, first[best], own[best], clip[best, first[best]], False, reason
        )

    def _candidates(
        self, style, res, min_clip, prompt_tokens, latency_scale, batch_size=1, features=None
    ):
        """Every (model, accelerator) curve for the style: CLIP at the job's prompt
        length (or, with prompt features, the prompt-aware promise), whether and where it
        first reaches `min_clip` (the planning rule), and the predicted run time there,
        corrected by `latency_scale`."""
        t = self._tables[(style, res)]
        if features is not None:
            clip = self.prompt_curves(style, res, features)
        else:
            tokens = DEFAULT_TOKENS if prompt_tokens is None else prompt_tokens
            bucket = int(np.abs(np.asarray(TOKEN_BUCKETS) - tokens).argmin())
            clip = t.clip[bucket]
        has, first = fewest_steps(clip, min_clip)
        lat = self._latency(style, res, batch_size)[np.arange(len(t.labels)), first]
        if latency_scale:
            chosen = t.steps[first]
            lat = lat * np.array(
                [
                    factor_at(latency_scale.get((model_key(o.name, o.version), acc)), n)
                    for (o, acc), n in zip(t.labels, chosen, strict=True)
                ]
            )
        return t, clip, has, first, lat

    def per_accelerator(
        self,
        style: str,
        min_clip: float,
        *,
        resolution: tuple[int, int] | None = None,
        prompt_tokens: int | None = None,
        latency_scale: Mapping[tuple[str, str], float] | None = None,
        batch_size: int = 1,
        prompt_features: PromptFeatures | None = None,
        prompt: str | None = None,
    ) -> dict[str, tuple[ModelOption, int, float, float]]:
        """Per accelerator, what the planning rule picks there: (model, steps, predicted
        run seconds, predicted CLIP). Accelerators with no model reaching `min_clip` are
        left out. What a scheduling policy places a job with (`scheduler/live.py`)."""
        res = self._validate(style, 1.0, min_clip, resolution, prompt_tokens, batch_size)
        features = self._features_for(prompt_features, prompt)
        t, clip, has, first, lat = self._candidates(
            style, res, min_clip, prompt_tokens, latency_scale, batch_size, features
        )
        rows = np.arange(len(t.labels))
        margin = clip[rows, first] - min_clip
        out = {}
        for acc, idx in t.accel_index.items():
            idx = np.asarray(idx)
            ok = idx[has[idx]]
            if len(ok):
                b = shortest(lat, margin, ok)
                o = t.labels[b][0]
                out[acc] = (o, int(t.steps[first[b]]), float(lat[b]), float(clip[b, first[b]]))
        return out

    @staticmethod
    def _plan(job_id, t, row, col, latency, clip, feasible, reason) -> Plan:
        o, acc = t.labels[row]
        return Plan(
            job_id,
            o.name,
            o.version,
            acc,
            int(t.steps[col]),
            float(latency),
            float(clip),
            bool(feasible),
            reason,
        )


def promise_margin(clip_predictor, key: str) -> float:
    """How far below its CLIP prediction for model `key` a plan promises (0 for a
    predictor without margins: published curves, or one trained before they existed)."""
    spec = getattr(clip_predictor, "spec", None)
    return float(getattr(spec, "lower_margin", {}).get(key, 0.0))


def accelerators_known_to(latency_predictor) -> list[str]:
    """Accelerator names the latency predictor was trained on (the only ones it can cost)."""
    return list(latency_predictor.spec.categories.get("accelerator", []))


def costable(card: ModelCard, known: list[str], spec) -> list[str]:
    """The accelerators of `known` a card's model has latency training rows on (all of
    them for a predictor trained before `spec.profiled` was kept); its patterns decide
    among them in `ModelOption.from_card`."""
    if not spec.profiled:
        return list(known)
    return [a for a in known if a in spec.profiled.get(card.key, ())]


def load_planner(
    settings,
    *,
    headroom: float = 0.0,
    accelerators: list[str] | None = None,
    batch_sizes: tuple[int, ...] | None = (1,),
    prompt_aware: bool = True,
    clip_path=None,
) -> Planner:
    """The planner for this home: champion predictors + the registered models, over the
    accelerators the latency predictor knows (only those in `accelerators` when given:
    serving plans for the devices it has), for `batch_sizes` (None: every batch size
    the latency predictor was trained on). Errors here are startup errors.

    prompt_aware: also load the prompt-aware CLIP predictor when this home has one (plans
    given prompt features then promise its bound); clip_path: the CLIP model whose text
    tower computes those features from a prompt (`plan(prompt=...)`)."""
    cards = [r.card for r in Registry(settings.registry_path).list()]
    if not cards:
        raise InvalidInputError("no model registered: register one (sdaas models make-tiny)")
    latency = load_predictor(settings, LATENCY_MODEL)
    clip = load_predictor(settings, CLIP_MODEL)
    known = accelerators_known_to(latency)
    if accelerators is not None:
        usable = [a for a in known if a in accelerators]
        if not usable:
            raise InvalidInputError(
                f"the latency predictor knows accelerators {known}; this host has "
                f"{accelerators}: run `sdaas profile` and `sdaas train` on this host"
            )
        known = usable
    options = [ModelOption.from_card(c, costable(c, known, latency.spec)) for c in cards]
    options = [o for o in options if o.accelerators]
    if not options:
        raise InvalidInputError(
            "no registered model can be costed: the latency predictor knows accelerators "
            f"{known}, none of which a card allows and its model was profiled on; "
            "profile them and retrain"
        )
    if batch_sizes is None:
        seen = getattr(latency.spec, "profiled_batches", {}).values()
        batch_sizes = tuple(sorted({1, *(b for v in seen for b in v)}))
    prompt_clip, featurizer = None, None
    if prompt_aware:
        try:
            prompt_clip = load_predictor(settings, PROMPT_CLIP_MODEL)
        except PredictorStoreError:
            prompt_clip = None  # none trained here (no profile with prompt features)
    if prompt_clip is not None and prompt_clip.prompt_basis is None:
        prompt_clip = None  # a prompt-aware predictor without its basis cannot be fed
    if prompt_clip is not None and clip_path is not None:
        from models.clip_score import ClipScorer
        from predictor.prompt_features import PromptFeaturizer, clip_fingerprint

        if clip_fingerprint(clip_path) != prompt_clip.prompt_basis.clip_model:
            raise InvalidInputError(
                f"clip_path: {str(clip_path)!r}: not the CLIP model the prompt-aware "
                "predictor's features were computed with; pass that one"
            )
        featurizer = PromptFeaturizer(ClipScorer.from_path(clip_path), prompt_clip.prompt_basis)
    return Planner(
        options,
        latency,
        clip,
        headroom=headroom,
        batch_sizes=batch_sizes,
        prompt_clip=prompt_clip,
        featurizer=featurizer,
    )
