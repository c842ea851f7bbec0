"""`sdaas models ACTION`: the model registry, the model developers' declarative API."""

from __future__ import annotations

import json
from pathlib import Path

from cli.common import registry
from sdaas.config import Settings
from sdaas.records import model_key


def add_parser(subparsers):
    m = subparsers.add_parser(
        "models",
        help="register, list, show and remove model cards",
        description="The model registry: the model developers' declarative API.",
    )
    msub = m.add_subparsers(dest="models_command", metavar="ACTION")
    m.set_defaults(models_parser=m)
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
    r.set_defaults(models_func=register)
    ls = msub.add_parser("list", help="list the latest version of every model")
    ls.add_argument("--style", help="only models serving this style")
    ls.add_argument("--json", action="store_true", help="print the cards as JSON")
    ls.set_defaults(models_func=list_models)
    sh = msub.add_parser("show", help="print a model's card and its version history")
    sh.add_argument("name")
    sh.add_argument("--version", help="a specific version (default: latest)")
    sh.set_defaults(models_func=show)
    rm = msub.add_parser("remove", help="remove a model (every version, or one)")
    rm.add_argument("name")
    rm.add_argument("--version", help="remove only this version")
    rm.set_defaults(models_func=remove)
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
    mt.set_defaults(models_func=make_tiny)
    tw = msub.add_parser(
        "train-toyworld",
        help="train the toy-world CLIP, VAE and UNets here (about 25 min on 2 cores: 23 "
        "to train, 2 to evaluate)",
        description="Regenerate the toy world from a seed: render captioned scenes in four "
        "styles, train a tiny CLIP, a VAE and three UNets of different cost, save them as "
        "diffusers pipelines (fp16) with cards, then measure CLIP score vs steps, attribute "
        "accuracy and retrieval on held-out captions (evidence.json, sample grids).",
    )
    tw.add_argument("--out", help="output folder (default data/models/toyworld)")
    tw.add_argument("--seed", type=int, default=0)
    tw.add_argument("--no-eval", action="store_true", help="skip the evaluation")
    tw.set_defaults(models_func=train_toyworld)
    return m


def run(args, settings: Settings) -> int:
    return args.models_func(args, settings)


def register(args, settings: Settings) -> int:
    from models.card import CardError

    reg = registry(settings)
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


def list_models(args, settings: Settings) -> int:
    from sdaas.table import registry_table

    rows = registry(settings).list(style=args.style)
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


def show(args, settings: Settings) -> int:
    import datetime as dt

    reg = registry(settings)
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


def remove(args, settings: Settings) -> int:
    n = registry(settings).remove(args.name, args.version)
    what = model_key(args.name, args.version) if args.version else f"{args.name} ({n} version(s))"
    print(f"removed {what}")
    return 0


def make_tiny(args, settings: Settings) -> int:
    from models.tiny import make_tiny as build

    out = Path(args.out) if args.out else settings.models_dir
    cards = build(out, seed=args.seed, force=args.force)
    print(f"tiny models under {out}; cards:")
    for c in cards:
        print(f"  {c}")
    if args.register:
        reg = registry(settings)
        for c in cards:
            r = reg.register_file(c, exist_ok=True)
            print(f"registered {r.card.key}")
    else:
        print("register them with: sdaas models register " + " ".join(str(c) for c in cards))
    return 0


def train_toyworld(args, settings: Settings) -> int:
    from models.toyworld.cards import rebuild
    from models.toyworld.train import ToyConfig

    out = Path(args.out) if args.out else settings.models_dir / "toyworld"
    print(f"training the toy world into {out} (seed {args.seed}); progress on stderr")
    report = rebuild(out, ToyConfig(seed=args.seed), evaluate=not args.no_eval)
    print(json.dumps({k: v for k, v in report.items() if k != "config"}, indent=2))
    print(f"done in {report['wall_s'] / 60:.1f} min; cards in {out / 'cards'}")
    return 0
