"""`sdaas generate`: run one registered model directly, without scheduling, to check it."""

from __future__ import annotations

import os
from pathlib import Path

from cli.arguments import resolution
from cli.common import registry
from sdaas.config import Settings
from sdaas.errors import InvalidInputError


def add_parser(subparsers):
    g = subparsers.add_parser(
        "generate",
        help="generate one image with a registered model",
        description="Run one registered model directly (no scheduling): for "
        "checking a model. The prompt is not logged; the file is named by its id.",
    )
    g.add_argument("--model", required=True, help="a registered model (`sdaas models list`)")
    g.add_argument("--version", help="its version (default: the most recently registered)")
    g.add_argument("--prompt", required=True, help="what to draw")
    g.add_argument("--steps", type=int, default=20, help="denoising steps (default 20)")
    g.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    g.add_argument("--resolution", type=resolution, help="WxH (default: card's first)")
    g.add_argument("--guidance", type=float, help="guidance scale (default: card's)")
    g.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    g.add_argument("--out", help="PNG path (default data/outputs/...)")
    return g


def run(args, settings: Settings) -> int:
    from models.backend import GenerationRequest, check_device
    from models.loader import load_backend
    from sdaas.limits import prompt_problem
    from sdaas.privacy import load_salt, prompt_id

    if why := prompt_problem(args.prompt):  # the same rule as serving's
        raise InvalidInputError(f"--prompt: {why}")
    check_device(args.device)
    card = registry(settings).get(args.model, args.version)
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
    if out.suffix.lower() != ".png":
        raise InvalidInputError(f"{flag}: {str(out)!r}: must end in .png")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInputError(f"{flag}: {str(out)!r}: cannot create its folder: {exc}") from None
    if out.is_dir() or not os.access(out.parent, os.W_OK):
        raise InvalidInputError(f"{flag}: {str(out)!r}: not a writable file path")
