"""Fleet scale: GPUs needed with ONE scheduling core against a core per host.

On the production-like workload (scheduler/production_workload.py), at fleets of about
64, 256 and 1,024 GPUs in hosts of 8 (4xA100+4xT4, the comparison cluster's mix), the
fewest GPUs at which each arrangement meets both SLOs for 90 % and 95 % of ALL arrived
jobs (80 % too, a level the per-host arrangements may reach when the others are out of
their reach): `central` (one core over every GPU, the design), `po2` (a router sends
each job to the less loaded of two random hosts, by its own fluid estimate of their
work), `po2-models` (the same router, model-aware: two random hosts and the host that
last got the job's model, scored by work per GPU plus the model's load time where the
router believes the host lacks it) and `random` (a uniformly random host); each host
then runs its own core (scheduler/fleet.py). Policy: slack-sjf unless --policy says
otherwise.

Scale: the requests of 2 days (nights, peak hours, sessions) compressed into
--duration-s seconds at LOAD x the reference cluster's capacity per GPU x the fleet's
GPUs, so a fleet 4x larger gets 4x the jobs in the same shape, and the central core
needs about the fleet's GPUs for 90 %. The search bisects on whole hosts, starting at
the fleet's size (central) or at the central core's answer (per-host).

Writes bench/results/fleet.json (the command, the load average before and after, the
GPUs needed per scale and arrangement, every goodput point the search simulated) and
bench/results/fleet.png; --quick (64 and 256 GPUs, half an hour of compressed time)
writes fleet-quick.json / fleet-quick.png. About 5 min on 2 cores; --quick ~15 s.
Usage: python bench/fleet_bench.py [--quick] [--policy KEY] [--duration-s S]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from bench_host import host_info

from scheduler.cluster import Cluster
from scheduler.comparison import capacity_of
from scheduler.fleet import ARRANGEMENTS, fleet_workload, host_cluster, hosts_needed
from scheduler.policies import make_policy
from scheduler.production import PRODUCTION, production_requests
from scheduler.production_workload import production_catalog, production_jobs
from scheduler.simulator import SimConfig

RESULTS = Path(__file__).resolve().parent / "results"
REFERENCE = "8xA100+8xT4"  # the comparison's cluster: its mix and its capacity per GPU
GPUS_PER_HOST = 8
SCALES = (64, 256, 1024)
QUICK_SCALES = (64, 256)
TARGETS = (0.80, 0.90, 0.95)  # 90 and 95 asked (issue 27); 80 for the per-host curves
# offered load per GPU, as a share of the reference cluster's capacity per GPU: at 0.12
# the central core needed 64-72 GPUs for 90 % on the 64-GPU fleet's jobs (calibrated
# here, slack-sjf); the comparison's 1.0 of 16 GPUs needed 82 for 90 %
LOAD = 0.12
DAYS = 2.0  # the production day shape compressed into the duration
DURATION_S = 14400.0  # full run (4 h); modest so that the 1,024-GPU fleet fits in minutes
QUICK_DURATION_S = 1800.0
MAX_FLEET = 8  # the search stops at 8x the fleet's hosts ("never" beyond)


def capacity_per_gpu(catalog, reference: Cluster, clip_margin: float) -> float:
    """The comparison's load unit for the production workload (20k requests, seed 0, all
    queued, FCFS) on the reference cluster, per GPU."""
    req = production_requests(20_000, seed=0)
    w = production_jobs(catalog, req, np.random.default_rng(0), clip_margin=clip_margin)
    return capacity_of(catalog, reference, w, clip_margin) / reference.size


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Writes bench/results/fleet.json and fleet.png (fleet-quick.* with --quick).",
    )
    quick = f"fleets of {QUICK_SCALES} GPUs, {QUICK_DURATION_S:g} s of jobs"
    ap.add_argument("--quick", action="store_true", help=quick)
    ap.add_argument("--policy", default="slack-sjf", help="scheduling policy (default slack-sjf)")
    duration = f"seconds of compressed production time (default {DURATION_S:g})"
    ap.add_argument("--duration-s", type=float, default=None, help=duration)
    ap.add_argument("--seed", type=int, default=0, help="workload and router seed")
    args = ap.parse_args()
    make_policy(args.policy)  # an unknown key fails before any work
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    tag = "-quick" if args.quick else ""
    scales = QUICK_SCALES if args.quick else SCALES
    duration = args.duration_s or (QUICK_DURATION_S if args.quick else DURATION_S)
    reference = Cluster.parse(REFERENCE)
    host = host_cluster(reference, GPUS_PER_HOST)
    catalog, _ = production_catalog(reference.kinds, PRODUCTION.checkpoints)
    config = SimConfig()
    cap = capacity_per_gpu(catalog, reference, config.clip_margin)
    print(f"fleet bench: {args.policy}, hosts of {host}, load {LOAD} x {cap:.4f} jobs/s per "
          f"GPU, {DAYS:g} days compressed into {duration:g} s; load average "
          f"{load0[0]:.2f}", flush=True)  # fmt: skip
    rows = []
    for gpus in scales:
        nominal = gpus // GPUS_PER_HOST
        rate = LOAD * cap * gpus
        w = fleet_workload(catalog, rate, duration, days=DAYS, seed=args.seed,
                           clip_margin=config.clip_margin)  # fmt: skip
        print(f"{gpus} GPUs ({nominal} hosts): {w.n} jobs at {rate:.2f} jobs/s", flush=True)
        row = {"fleet_gpus": gpus, "hosts": nominal, "jobs": w.n, "rate_per_s": rate,
               "arrangements": {}}  # fmt: skip
        start = nominal
        for arrangement in ARRANGEMENTS:
            s0 = time.perf_counter()

            def progress(msg: str, gpus=gpus) -> None:
                print(f"  [{time.perf_counter() - t0:6.1f} s] {gpus} GPUs {msg}", flush=True)

            needs = hosts_needed(catalog, host, w, arrangement, args.policy, config, TARGETS,
                                 start=start, max_hosts=MAX_FLEET * nominal, seed=args.seed,
                                 progress=progress)  # fmt: skip
            if arrangement == "central" and needs[0].hosts is not None:
                start = needs[0].hosts  # per-host needs at least about as many
            row["arrangements"][arrangement] = {
                "wall_s": round(time.perf_counter() - s0, 2),
                "needs": [
                    {**{k: v for k, v in asdict(n).items() if k != "curve"},
                     "curve": [{"hosts": h, "gpus": h * GPUS_PER_HOST, "goodput": g,
                                "lost_share": lost} for h, g, lost in n.curve]}
                    for n in needs
                ],
            }  # fmt: skip
            line = ", ".join(
                f"{n.target:.0%}: {n.gpus if n.gpus else 'never'} GPUs"
                + (f" (best {n.goodput:.3f})" if n.gpus is None else "")
                for n in needs
            )
            print(f"  {gpus} GPUs {arrangement:10s} {line}", flush=True)
        rows.append(row)
    table = {
        str(r["fleet_gpus"]): {
            a: {f"{n['target']:.0%}": n["gpus"] for n in v["needs"]}
            for a, v in r["arrangements"].items()
        }
        for r in rows
    }
    out = {
        "command": " ".join(["python", *sys.argv]),
        "load_average_before": load0,
        "load_average_after": os.getloadavg(),
        "host": host_info(load0),
        "wall_s": round(time.perf_counter() - t0, 1),
        "policy": args.policy,
        "reference_cluster": REFERENCE,
        "host_mix": str(host),
        "gpus_per_host": GPUS_PER_HOST,
        "targets": list(TARGETS),
        "goodput": "both SLOs met, share of ALL arrived jobs (rejected and dropped count)",
        "workload": {
            "kind": "production-like (scheduler/production.py, production_workload.py)",
            "days_compressed": DAYS,
            "duration_s": duration,
            "load": LOAD,
            "capacity_jobs_per_s_per_gpu": cap,
            "seed": args.seed,
            "note": (
                f"the requests of {DAYS:g} days compressed into {duration:g} s (modest, "
                "so the 1,024-GPU fleet's searches run in minutes on 2 cores); rate = "
                "load x capacity per GPU x fleet GPUs, so every fleet has the same jobs "
                "per GPU and the same daily shape"
            ),
        },  # fmt: skip
        "search": (
            f"bisection on whole hosts from the fleet's size (central) or the central "
            f"core's 80 % answer (per-host), up to {MAX_FLEET}x the fleet's hosts; "
            "null: not reached there (`goodput` is then the best seen); the router's "
            "seed is the same at every size"
        ),  # fmt: skip
        "gpus_needed": table,
        "scales": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"fleet{tag}.json").write_text(json.dumps(out, indent=2) + "\n")
    plot(rows, RESULTS / f"fleet{tag}.png", args.policy)
    print(f"done in {out['wall_s']:.0f} s; load average {out['load_average_after'][0]:.2f}; "
          f"results in {RESULTS / f'fleet{tag}.json'}")  # fmt: skip


def plot(rows: list[dict], path: Path, policy: str) -> None:
    """GPUs needed against fleet scale: a colour per arrangement, a line style per
    target; a hollow triangle (labelled with the best goodput seen) at the largest size
    tried where a target was not reached."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    colours = {"central": "tab:blue", "po2": "tab:orange", "po2-models": "tab:red",
               "random": "tab:green"}  # fmt: skip
    nudge = {"central": 1.0, "po2": 0.93, "po2-models": 0.86, "random": 1.07}  # apart
    # central's points under smaller ones: an equal answer shows both
    marks = {"central": ("o", 9), "po2": ("s", 5), "po2-models": ("D", 5), "random": ("v", 6)}
    styles = {0.80: ":", 0.90: "-", 0.95: "--"}
    fig, ax = plt.subplots(figsize=(8, 6))
    xs = [r["fleet_gpus"] for r in rows]
    missed: dict[int, list[tuple[str, str, float]]] = {}  # scale -> labels, colours, y
    for a, colour in colours.items():
        for t, ls in styles.items():
            ys = []
            for r in rows:
                (n,) = [n for n in r["arrangements"][a]["needs"] if n["target"] == t]
                ys.append(n["gpus"] if n["gpus"] else np.nan)
                if not n["gpus"]:
                    x, y = r["fleet_gpus"] * nudge[a], max(p["gpus"] for p in n["curve"])
                    ax.plot([x], [y], "^", color=colour, mfc="none", ms=9)
                    label = f"{a} {t:.0%}: best {n['goodput']:.3f}"
                    missed.setdefault(r["fleet_gpus"], []).append((label, colour, y))
            if not all(np.isnan(ys)):
                ax.plot(xs, ys, ls, color=colour, marker=marks[a][0], ms=marks[a][1],
                        label=f"{a} {t:.0%}")  # fmt: skip
    for x, labels in missed.items():  # one column left of the scale's triangles
        top = max(y for _, _, y in labels)
        for i, (label, colour, _) in enumerate(labels):
            ax.annotate(label, (x * min(nudge.values()), top), xytext=(-8, -7.5 * i),
                        textcoords="offset points", fontsize=6, color=colour,
                        va="center", ha="right")  # fmt: skip
    ax.plot(xs, xs, color="grey", lw=0.8, alpha=0.6, label="y = fleet size")
    ax.plot([], [], "^", color="grey", mfc="none", label="not reached by 8x the fleet")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlim(xs[0] / 2.6, xs[-1] * 2.2)
    ax.set_xlabel("fleet scale (GPUs the jobs are sized for)")
    ax.set_ylabel("GPUs needed (hosts of 8)")
    ax.set_title(f"One core vs per-host cores: GPUs for 80/90/95 % goodput ({policy}, "
                 "production-like jobs)", fontsize=9)  # fmt: skip
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
