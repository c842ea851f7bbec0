"""What several commands do with the settings: open the model registry, find the broker."""

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
