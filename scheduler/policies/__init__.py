"""Every scheduling policy, one module each. Importing this package registers them all,
so the look-ups by key live here (`scheduler/policy.py` keeps the interface and
`register`)."""

from scheduler.policies import (  # noqa: F401
    clockwork,
    edf,
    fair_bound,
    fastserve,
    fcfs,
    infaas,
    orca,
    sjf,
    slack_sjf,
    srpt_oracle,
)
from scheduler.policy import REGISTRY, Policy, PolicyKey
from sdaas.errors import InvalidInputError


def known_policies() -> list[str]:
    return [k.value for k in PolicyKey if k in REGISTRY]


def policy_class(key: str | PolicyKey) -> type[Policy]:
    try:
        return REGISTRY[PolicyKey(key)]
    except ValueError:
        raise InvalidInputError(
            f"policy: {key!r}: unknown; known policies: {', '.join(known_policies())}"
        ) from None


def make_policy(key: str | PolicyKey, **kwargs) -> Policy:
    return policy_class(key)(**kwargs)
