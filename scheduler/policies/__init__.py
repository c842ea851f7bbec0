"""One policy per module; importing this package registers them all."""

from scheduler.policies import (  # noqa: F401
    clockwork,
    edf,
    fastserve,
    fcfs,
    infaas,
    orca,
    sjf,
    slack_sjf,
    srpt_oracle,
)
