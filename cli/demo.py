"""`sdaas demo`: the main job on embedded defaults, end to end, with a report.

Builds the tiny models, registers them, lists the registry, generates one image
per model for a sample prompt, saves the images and a labelled contact sheet
under `data/outputs/`, prints a table of what ran and how long it took, then runs
the quick profiling sweep (Beam, FnApiRunner) and prints its fitted latency lines, then
a small sweep at batch sizes 2 and 4 (serving batches a model only at the batch sizes it
was profiled at), trains the LightGBM predictors (tracked in MLflow) and plans a few jobs,
feasible and not. Later stages (simulator, serving) extend this.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

from PIL import Image, ImageDraw

from models.backend import GenerationRequest
from models.loader import load_backend
from models.registry import Registry
from models.tiny import make_tiny
from pipelines.profile_grid import SweepConfig
from pipelines.profile_sweep import run_sweep
from pipelines.prompts import TOYWORLD_PROMPT_SET
from profiles.summary import summary_report
from sdaas.config import SHIPPED_TOYWORLD, Settings
from sdaas.privacy import load_salt, prompt_id
from sdaas.table import format_table, registry_table

log = logging.getLogger(__name__)

# the quick grid, on captions of the toy world: the prompts its models can draw, so their
# CLIP (and the margin plans promise below it) means something
DEMO_SWEEP = SweepConfig(prompt_set=TOYWORLD_PROMPT_SET)
# the batch sizes the demo profiles besides 1, so that its serving batches: a policy
# batches a model only at the sizes it was profiled at (`sdaas serve` says which)
DEMO_BATCH_SIZES = (2, 4)
DEMO_BATCH_MAX_STEPS = 4
SAMPLE_PROMPT = "two small red circles on the left"


@dataclass(frozen=True)
class DemoRow:
    model: str
    version: str
    styles: str
    scheduler: str
    steps: int
    latency_s: float
    per_step_ms: float
    image: str


def batch_sweep(sweep: SweepConfig) -> SweepConfig:
    """The sweep's batch part: batch sizes `DEMO_BATCH_SIZES`, on the sweep's prompts (a
    prompt's CLIP varies by tens of points with the seed and the caption, and the CLIP
    predictor reads every row: fewer prompts here would skew it), at the sweep's fewest
    and most steps up to `DEMO_BATCH_MAX_STEPS` (where the demo's jobs are planned). Batch 1
    is the sweep itself: training takes each (model, accelerator, batch size) from the
    newest run that measured it. Serving measures what a batch costs on its own engine
    before it batches (`engine/calibrator.py`); these rows say that it may."""
    low = [s for s in sweep.steps if s <= DEMO_BATCH_MAX_STEPS] or [min(sweep.steps)]
    steps = tuple(sorted({min(low), max(low)}))
    return replace(sweep, steps=steps, batch_sizes=DEMO_BATCH_SIZES)


def contact_sheet(images: list[tuple[str, Image.Image]], path: Path, scale: int = 3) -> Path:
    """Images side by side, each upscaled and labelled with its model name."""
    tiles = [
        (label, im.resize((im.width * scale, im.height * scale), Image.NEAREST))
        for label, im in images
    ]
    w = sum(t.width for _, t in tiles) + 10 * (len(tiles) + 1)
    h = max(t.height for _, t in tiles) + 30
    sheet = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(sheet)
    x = 10
    for label, tile in tiles:
        sheet.paste(tile, (x, 5))
        draw.text((x, tile.height + 10), label, fill="black")
        x += tile.width + 10
    sheet.save(path)
    return path


def demo_plans(styles: list[str]) -> list[tuple[str, float, float]]:
    """(style, latency SLO s, min CLIP) for the demo: two that should be feasible (the second
    asks for quality, so more steps), one too fast for any model, one above any CLIP."""
    a, b = styles[0], styles[-1]
    return [(a, 2.0, 0.0), (b, 5.0, 15.0), (b, 0.001, 0.0), (a, 5.0, 99.0)]


def batch_champion(settings: Settings, new, out=print) -> None:
    """Serving batches a model only at the batch sizes the champion latency predictor was
    profiled at. A home that ran the demo before this sweep profiled batches holds a
    champion of batch 1 only, which the new version need not beat on held-out error (its
    extra rows are a few percent): then the new version, trained on these profiles, is
    made champion, and the demo says so."""
    from predictor.store import CHAMPION, connect, load_predictor
    from predictor.tracking import LATENCY_MODEL

    if new.promoted:
        return
    champion = load_predictor(settings, LATENCY_MODEL)
    served = [r.card.key for r in Registry(settings.registry_path).list()]
    batches = champion.spec.profiled_batches
    if any(b > 1 for key in served for b in batches.get(key, ())):
        return
    client = connect(settings, create=False).MlflowClient()
    client.set_registered_model_alias(LATENCY_MODEL, CHAMPION, new.version)
    out(f"{LATENCY_MODEL} v{new.version} made champion by the demo: champion "
        f"v{champion.version} has the served models at batch size 1 only, so serving with it "
        "would batch nothing")  # fmt: skip


def plan_demo(settings: Settings, out=print) -> None:
    from predictor.planner import load_planner
    from predictor.store import tracking_uri
    from predictor.train_cli import train_all

    r = train_all(settings, data="both", accept_noisy=True)  # the demo goes on, and says so
    out(f"trained on {sum(r.sources.values())} rows {r.sources} (data hash {r.data_hash})")
    if r.noisy:
        out(
            f"WARNING: the host was busy while profiling: {'; '.join(r.noisy)}. Predictions "
            "are corrected while serving; `sdaas profile` on a quiet host fixes the profile"
        )
    lat = r.latency_metrics
    out(
        f"latency held-out: cell-median MAPE {lat['cell_median_mape_pct']:.2f} %, "
        f"row MAPE {lat['mape_pct']:.2f} %; {r.latency.name} v{r.latency.version}: "
        f"{r.latency.reason}"
    )
    if r.clip is not None:
        out(
            f"CLIP held-out MAE {r.clip_metrics['mae']:.2f}; {r.clip.name} v{r.clip.version}: "
            f"{r.clip.reason}"
        )
    batch_champion(settings, r.latency, out)
    planner = load_planner(settings)
    rows = []
    for style, slo, min_clip in demo_plans(planner.styles):
        p = planner.plan(style, slo, min_clip)
        rows.append(
            [
                style,
                slo,
                min_clip,
                "yes" if p.feasible else "no",
                f"{p.model} {p.steps} steps" if p.feasible else p.reason,
                f"{p.predicted_latency_s:.3f}",
                f"{p.predicted_clip:.2f}",
            ]
        )
    out(
        format_table(
            ["style", "SLO s", "min CLIP", "feasible", "plan / reason", "pred s", "pred CLIP"], rows
        )
    )
    out(
        f"MLflow store: {tracking_uri(settings)}. Look: `make mlflow-ui`, open "
        "http://127.0.0.1:5000, experiment sdaas-predictors (runs sdaas-latency / sdaas-clip: "
        "metrics, plots/), Models tab for versions and the champion alias."
    )


def scheduler_demo(settings: Settings, out=print) -> Path:
    """A small `sdaas bench`: every policy, bursty arrivals (CV 5), two loads."""
    import polars as pl

    from scheduler.comparison import ComparisonConfig, run_comparison

    cfg = ComparisonConfig(jobs=3000, seeds=1, loads=(0.7, 1.1), workloads=("bursty",))
    folder = settings.outputs_dir / "scheduler-demo"
    res = run_comparison(cfg, folder)
    cap = res["meta"]["capacity_jobs_per_s"]["bursty"]
    out(f"   capacity (FCFS, no batching) {cap:.1f} jobs/s; {cfg.jobs} jobs per run")
    s = res["summary"].sort(["load", "both_slo_met"], descending=[False, True])
    rows = [
        [
            f"{r['load']:g}",
            r["policy"],
            f"{r['both_slo_met']:.3f}",
            f"{r['mean_jct_s']:.2f}",
            f"{r['lost_share']:.1%}",
            f"{r['p99_jct_longest_decile_s']:.1f}",
        ]
        for r in s.filter(pl.col("load").is_in(list(cfg.loads))).iter_rows(named=True)
    ]
    out(
        format_table(["load", "policy", "goodput", "mean JCT s", "lost", "p99 longest 10% s"], rows)
    )
    out("   goodput: both SLOs met over ALL arrived jobs; mean JCT over completed ones")
    need = res["gpus_needed"].filter(pl.col("target") == 0.9)
    cells = [f"{r['policy']} {r['gpus'] if r['gpus'] is not None else 'never'}"
             for r in need.sort("gpus", nulls_last=True).iter_rows(named=True)]  # fmt: skip
    out(f"   GPUs needed for 90 % goodput at load {cfg.plan_load:g}: " + ", ".join(cells))
    out(f"plots and tables: {folder}/ (full comparison: sdaas bench, make bench)")
    return folder


def run_demo(
    settings: Settings,
    *,
    steps: int = 10,
    seed: int = 0,
    out=print,
    sweep: SweepConfig | None = DEMO_SWEEP,
) -> list[DemoRow]:
    t0 = time.perf_counter()
    total = 8 if sweep is not None else 5
    toy_cards = sorted((SHIPPED_TOYWORLD / "cards").glob("*.yaml"))
    if toy_cards:
        out(f"== 1/{total} toy-world models (trained on this CPU, shipped in {SHIPPED_TOYWORLD})")
        cards = toy_cards
    else:
        out(f"== 1/{total} building tiny models (random weights; skipped when already built)")
        cards = make_tiny(settings.models_dir)
    registry = Registry(settings.registry_path, model_roots=settings.model_roots)
    out(f"== 2/{total} registering {len(cards)} model cards in {settings.registry_path}")
    for card_path in cards:
        registry.register_file(card_path, exist_ok=True)
    listing = registry.list()
    out(registry_table(listing, accelerators=False))
    pid = prompt_id(SAMPLE_PROMPT, load_salt(settings))
    out(
        f"== 3/{total} generating one image per model at {steps} steps "
        f"(prompt id {pid}, seed {seed})"
    )
    settings.outputs_dir.mkdir(parents=True, exist_ok=True)
    rows: list[DemoRow] = []
    images: list[tuple[str, Image.Image]] = []
    for r in listing:
        card = r.card
        backend = load_backend(card, "cpu")
        w, h = card.resolution_pairs[0]
        # One untimed 1-step call first: the first call pays one-off allocation costs.
        style = card.styles[0]
        backend.generate(
            GenerationRequest((SAMPLE_PROMPT,), (seed,), 1, w, h, card.guidance_scale, style)
        )
        req = GenerationRequest((SAMPLE_PROMPT,), (seed,), steps, w, h, card.guidance_scale, style)
        res = backend.generate(req)
        path = settings.outputs_dir / f"{card.name}-{steps}steps-seed{seed}.png"
        res.images[0].save(path)
        images.append((card.name, res.images[0]))
        rows.append(
            DemoRow(
                card.name,
                card.version,
                ",".join(card.styles),
                card.scheduler,
                steps,
                res.latency_s,
                res.per_step_s * 1000,
                str(path),
            )
        )
        out(f"   {card.name}: {res.latency_s:.2f} s")
        backend.close()
    sheet = contact_sheet(images, settings.outputs_dir / "demo_contact_sheet.png")
    out(f"== 4/{total} results")
    out(
        format_table(
            ["model", "version", "styles", "scheduler", "steps", "latency_s", "ms/step", "image"],
            [
                [
                    r.model,
                    r.version,
                    r.styles,
                    r.scheduler,
                    r.steps,
                    f"{r.latency_s:.3f}",
                    f"{r.per_step_ms:.1f}",
                    r.image,
                ]
                for r in rows
            ],
        )
    )
    out(f"contact sheet: {sheet}")
    if sweep is not None:
        out(f"== 5/{total} profiling sweep (Apache Beam, FnApiRunner)")
        report = run_sweep(settings, sweep, progress=out)
        text, _ = summary_report(Path(report.out_dir), Path(report.out_dir) / "profile.png")
        out(text)
        batches = batch_sweep(sweep)
        sizes = ",".join(map(str, batches.batch_sizes))
        out(f"   and at batch sizes {sizes} (serving batches a model only at sizes it was "
            f"profiled at): steps {','.join(map(str, batches.steps))}")  # fmt: skip
        batch_dir = Path(f"{report.out_dir}-batches")
        run_sweep(settings, batches, out_dir=batch_dir, progress=out)
        text, _ = summary_report(batch_dir, batch_dir / "profile.png")
        out(text)
        out(f"inspect again with: sdaas profile --summary {report.out_dir} (and {batch_dir})")
        out(f"== 6/{total} predictors (LightGBM, MLflow) and plans")
        plan_demo(settings, out)
    step = 5 if sweep is None else 7
    out(f"== {step}/{total} scheduling policies on a simulated 8xA100+8xT4 cluster")
    scheduler_demo(settings, out)
    if sweep is not None:
        from cli.serving_demo import serving_demo

        out(f"== {total}/{total} serving: Kafka -> Beam (window, plan, policy, run) -> results")
        serving_demo(settings, out)
        from cli.api_demo import api_demo

        out("   the front door: HTTP API (FastAPI) -> Kafka -> serving -> events back")
        api_demo(settings, out)
    note = (
        f"the toy-world models were trained on this CPU: see {SHIPPED_TOYWORLD}/evidence.json"
        if toy_cards
        else "the tiny models have random weights: their images are noise; latencies are real"
    )
    out(f"demo finished in {time.perf_counter() - t0:.1f} s; {note}.")
    return rows
