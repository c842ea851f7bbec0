"""`sdaas serve`: the serving loop, jobs from Kafka through the policy to the devices."""

from __future__ import annotations

import os
import sys
import time

from cli.arguments import comma_list, kafka_args
from sdaas.config import Settings
from sdaas.errors import SdaasError


def add_parser(subparsers):
    sv = subparsers.add_parser(
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
                    "also sjf, fcfs, edf, clockwork, infaas, orca, fastserve, srpt-oracle, "
                    "and fair-bound: the bench's bound, which plans on true run times)",
                    )  # fmt: skip
    sv.add_argument("--window-s", type=float, default=2.0, help="window length (default 2 s)")
    sv.add_argument("--max-backlog-s", type=float, default=30.0,
                    help="admission for every policy: most queued predicted work per "
                    "device, in seconds (default 30)")  # fmt: skip
    sv.add_argument("--headroom", type=float, default=0.1,
                    help="policies see deadlines at SLO x (1 - headroom), room for run-time "
                    "noise (default 0.1)")  # fmt: skip
    sv.add_argument("--devices", type=comma_list(str, "--devices"),
                    help="device instances to serve on, comma-separated: cpu, cpu:0,cpu:1 (two "
                    "CPU device engines), cuda, cuda:0,cuda:1 (default: every CUDA device, "
                    "else the CPU)")  # fmt: skip
    sv.add_argument("--threads-per-device", type=int, help="torch CPU threads per "
                    "CPU device engine (default: the rule the sweep profiles at, so the "
                    "profile holds as served: the cores less one for the front, split over "
                    "the CPU devices; SDAAS_TORCH_THREADS sets both)")  # fmt: skip
    sv.add_argument("--in-process", action="store_true", help="run the device engines as "
                    "threads of this process instead of one process per device (measured "
                    "here: threads are 1.2-1.4x one device, processes 1.7x; on CPU a torch "
                    "call with 2 threads is ~3x slower off the main thread)")  # fmt: skip
    sv.add_argument("--idle-probe", action="store_true",
                    help="while no job runs for 20 s, time a 4-step reference run of each "
                         "kind's fastest model at most every 30 s, so the host-speed drift "
                         "the planner scales by stays current (experimental: off by "
                         "default)")  # fmt: skip
    sv.add_argument("--max-resident", type=int, help="models loaded at once per device "
                    "(LRU; a device switching to a model that is not loaded pays its measured "
                    "load time, and the scheduler counts it; default: every model, "
                    "preloaded)")  # fmt: skip
    sv.add_argument("--ray", metavar="auto|ADDRESS", help="serve on a Ray cluster: one "
                    "device engine per engine its nodes offer (a node offers N engines of a "
                    "kind with `ray start --resources '{\"sdaas:KIND\": N}'`), under this "
                    "process's one scheduling core; a dead node's jobs finish on the other "
                    "engines. auto: start a one-node Ray instance here, on loopback, with the "
                    "--devices (default: no Ray, engines on this host)")  # fmt: skip
    sv.add_argument("--max-engines", type=int, metavar="N", help="with --ray: room for up "
                    "to N engines per accelerator kind; serving follows the elastic signal "
                    "(recent work, queue, models asked for), asks Ray's autoscaler for "
                    "engines (ray.autoscaler.sdk.request_resources), lets new ones join once "
                    "loaded and idle ones leave (default: the engines found at start, no "
                    "scaling)")  # fmt: skip
    sv.add_argument("--max-windows", type=int, help="stop after N windows")
    sv.add_argument("--idle-exit", type=float, help="stop after S seconds without jobs (or "
                    "with the broker unreachable)")  # fmt: skip
    sv.add_argument("--new-store", action="store_true", help="start an empty result store "
                    "even though images or committed offsets show one existed (its job ids "
                    "would run again)")  # fmt: skip
    return sv


def _say_batching(spec) -> None:
    """Whether the policy batches, and with which models (the profiled batch sizes)."""
    from scheduler.policies import policy_class

    if not policy_class(spec.policy).batching:
        return
    sizes = {k: v for k, v in spec.planner.profiled_batches.items()  # served models only
             if k in spec.cards and max(v, default=1) > 1}  # fmt: skip
    if sizes:
        said = ", ".join(f"{k} up to {max(v)}" for k, v in sorted(sizes.items()))
        print(f"{spec.policy} batches jobs of one model at step boundaries: {said}")
    else:
        print(
            f"note: {spec.policy} batches, but no model was profiled at batch sizes > 1, so "
            "none is batched; profile with `sdaas profile --batch-sizes 1,2,4` and retrain"
        )


def fleet_lines(rows: list[dict]) -> list[str]:
    """The engines per node: what an operator of `serve --ray` reads."""
    out = []
    for node in sorted({r["node"] for r in rows}):
        mine = [r for r in rows if r["node"] == node]
        up = sum(r["in_service"] for r in mine)
        out.append(f"node {node}: {up}/{len(mine)} engines in service")
        for r in mine:
            p99 = r["dispatch_p99_ms"]
            out.append(f"  {r['engine']} [{r['state']}] running {r['running']}, queued "
                       f"{r['queued']}, resident {', '.join(r['resident']) or '-'}"
                       + (f", dispatch p99 {p99:.1f} ms" if p99 is not None else ""))  # fmt: skip
    return out


def watch_fleet(runtime, say, every_s: float = 10.0) -> None:
    """Print the engines now, and again whenever one joins, leaves or changes state."""
    import threading

    def shape():
        return [(r["engine"], r["state"], r["in_service"]) for r in runtime.fleet()]

    def loop(last):
        while True:
            time.sleep(every_s)
            try:
                now = shape()
                if now != last:
                    for line in ["engines changed:", *fleet_lines(runtime.fleet())]:
                        say(line)
                    last = now
            except Exception:  # noqa: BLE001 - the view is best effort
                return

    for line in fleet_lines(runtime.fleet()):
        say(line)
    threading.Thread(target=loop, args=(shape(),), name="sdaas-fleet-view", daemon=True).start()


def run(args, settings: Settings) -> int:
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
        idle_probe=args.idle_probe,
        ray=args.ray,
        max_engines=args.max_engines,
    )
    broker = None
    state = settings.broker_state_path
    bootstrap = args.bootstrap_servers or running_broker(state)
    if not bootstrap:
        broker = EmbeddedBroker(state_file=state, log_file=settings.broker_log_path).start()
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
        if spec.ray:
            watch_fleet(driver.runtime, lambda line: print(line, flush=True))
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
