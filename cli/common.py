"""What several commands do with the settings: open the model registry, find the broker,
list what the registered models serve."""

from __future__ import annotations

from sdaas.config import Settings
from sdaas.errors import SdaasError


def registry(settings: Settings):
    from models.registry import Registry

    return Registry(settings.registry_path, model_roots=settings.model_roots)


def bootstrap(args, settings: Settings) -> str:
    """--bootstrap-servers, else the embedded broker that runs; none: say how to start one."""
    from adapters.kafka_broker import running_broker

    if args.bootstrap_servers:
        return args.bootstrap_servers
    found = running_broker(settings.broker_state_path)
    if not found:
        raise SdaasError(
            "no Kafka broker: start one with `sdaas serve` (embedded) or `sdaas broker`, "
            "or pass --bootstrap-servers HOST:PORT"
        )
    return found


def served_styles(settings: Settings) -> list[str]:
    """The styles of the registered models (empty: none registered here)."""
    if not settings.registry_path.exists():
        return []
    return registry(settings).styles()


def served_resolutions(settings: Settings) -> dict[str, tuple[tuple[int, int], ...]]:
    """style -> the resolutions its registered models serve (the API refuses others at
    the door instead of accepting a job serving would dead-letter)."""
    if not settings.registry_path.exists():
        return {}
    out: dict[str, set[tuple[int, int]]] = {}
    for r in registry(settings).list():
        for style in r.card.styles:
            out.setdefault(style, set()).update(r.card.resolution_pairs)
    return {style: tuple(sorted(pairs)) for style, pairs in out.items()}
