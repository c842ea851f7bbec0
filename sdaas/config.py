"""Where sdaas keeps its files.

One frozen settings object, built from the environment with sensible defaults,
so that tests and deployments point the whole system elsewhere with one
variable (`SDAAS_HOME`) instead of patching paths module by module.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

# The repository root when installed editable / run from a checkout.
_PACKAGE_ROOT = Path(__file__).resolve().parents[1]
# Toy-world models trained here and committed (`sdaas models train-toyworld` rebuilds them).
SHIPPED_TOYWORLD = _PACKAGE_ROOT / "data" / "models" / "toyworld"
TENANTS_DB = Path("api") / "tenants.db"  # under the data folder: `sdaas tenants` and the API


def _default_home() -> Path:
    env = os.environ.get("SDAAS_HOME")
    return Path(env).resolve() if env else _PACKAGE_ROOT


@dataclass(frozen=True)
class Settings:
    """Paths of one sdaas installation.

    home: the root that holds `data/` and `mlruns/` (env `SDAAS_HOME`, default: the checkout).
    extra_model_roots: further folders model cards may point into (env `SDAAS_MODEL_ROOTS`,
        separated by the OS path separator). Paths outside every root are refused, so a card
        cannot make the service read arbitrary files.
    """

    home: Path = field(default_factory=_default_home)
    extra_model_roots: tuple[Path, ...] = field(
        default_factory=lambda: tuple(
            Path(p).resolve()
            for p in os.environ.get("SDAAS_MODEL_ROOTS", "").split(os.pathsep)
            if p
        )
    )

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def models_dir(self) -> Path:
        """Where `make-tiny` (and later the toy world) write model folders."""
        return self.data_dir / "models"

    @property
    def registry_path(self) -> Path:
        """The sqlite file that holds every registered card version."""
        return self.data_dir / "registry" / "registry.db"

    @property
    def outputs_dir(self) -> Path:
        return self.data_dir / "outputs"

    @property
    def model_roots(self) -> tuple[Path, ...]:
        """Where cards may point: this home's models, the toy-world models shipped with the
        checkout, and SDAAS_MODEL_ROOTS."""
        return (self.models_dir.resolve(), SHIPPED_TOYWORLD.resolve(), *self.extra_model_roots)

    @property
    def salt_path(self) -> Path:
        return self.data_dir / "registry" / "prompt_salt"

    @property
    def profiles_dir(self) -> Path:
        """Where `sdaas profile` writes its runs, one folder each."""
        return self.data_dir / "profiles"

    @property
    def broker_state_path(self) -> Path:
        """The embedded broker's address while it runs: how `serve`, `submit` and `api`
        find it."""
        return self.data_dir / "serving" / "broker.json"

    @property
    def broker_log_path(self) -> Path:
        """The embedded broker's own output."""
        return self.data_dir / "serving" / "broker.log"

    @property
    def tenants_path(self) -> Path:
        """The sqlite file of tenants and their API keys (salted hashes only)."""
        return self.data_dir / TENANTS_DB
