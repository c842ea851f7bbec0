"""The model card: the declarative API through which model developers register models.

A card is YAML. It is validated in one pass so that *every* problem is reported
(field, value, why), never just the first one: a developer fixing a card should
not have to resubmit it once per typo.
"""

from __future__ import annotations

import fnmatch
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from sdaas.errors import InvalidInputError
from sdaas.records import model_key

CARD_SCHEMA_VERSION = 1

# Card name -> diffusers scheduler class. One vocabulary for cards, backends and docs.
SCHEDULERS: dict[str, str] = {
    "ddim": "DDIMScheduler",
    "ddpm": "DDPMScheduler",
    "pndm": "PNDMScheduler",
    "lms": "LMSDiscreteScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler-ancestral": "EulerAncestralDiscreteScheduler",
    "heun": "HeunDiscreteScheduler",
    "dpm-solver++": "DPMSolverMultistepScheduler",
    "unipc": "UniPCMultistepScheduler",
}

_SLUG = r"^[a-z0-9][a-z0-9._-]{0,63}$"
_RESOLUTION = re.compile(r"^(\d{1,5})x(\d{1,5})$")
_ENTRYPOINT = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a card: where, what was there, and why it is wrong."""

    field: str
    value: Any
    why: str

    def __str__(self) -> str:
        return f"{self.field}: {self.value!r}: {self.why}"


class CardError(InvalidInputError):
    """A card was refused. Carries every problem found, not just the first."""

    def __init__(self, source: str, problems: list[Problem]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"model card {source} refused ({len(problems)} problem(s)):\n{lines}")

    @classmethod
    def combined(cls, messages: list[str]) -> InvalidInputError:
        """Several refused cards reported together (nothing was registered)."""
        return InvalidInputError("nothing registered.\n" + "\n".join(messages))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class StepRange(_Strict):
    """Denoising step counts the model supports (inclusive)."""

    min: int = Field(ge=1, le=1000, description="fewest denoising steps served")
    max: int = Field(ge=1, le=1000, description="most denoising steps served")

    @model_validator(mode="after")
    def _ordered(self) -> StepRange:
        if self.min > self.max:
            raise ValueError(f"steps.min ({self.min}) is greater than steps.max ({self.max})")
        return self


def _source_roots(info: ValidationInfo) -> tuple[tuple[Path, ...], Path]:
    ctx = info.context or {}
    return tuple(ctx.get("model_roots", ())), Path(ctx.get("base_dir", "."))


class DiffusersSource(_Strict):
    """Weights in diffusers format: a local folder (`path`) or a hub id (`hub_id`)."""

    kind: Literal["diffusers"]
    path: str | None = Field(default=None, description="folder with model_index.json")
    hub_id: str | None = Field(default=None, description="e.g. runwayml/stable-diffusion-v1-5")

    @model_validator(mode="after")
    def _one_location(self, info: ValidationInfo) -> DiffusersSource:
        if (self.path is None) == (self.hub_id is None):
            raise ValueError("give exactly one of source.path or source.hub_id")
        if self.hub_id is not None and not _HUB_ID.match(self.hub_id):
            raise ValueError(f"source.hub_id {self.hub_id!r} is not of the form owner/name")
        if self.path is not None:
            roots, base_dir = _source_roots(info)
            resolved = (base_dir / self.path).resolve()
            if roots and not any(resolved.is_relative_to(r) for r in roots):
                raise ValueError(
                    f"source.path {self.path!r} resolves to {resolved}, outside the allowed "
                    f"model roots {[str(r) for r in roots]}; move the weights under one of them "
                    "or add a root with SDAAS_MODEL_ROOTS"
                )
            if not resolved.exists():
                raise ValueError(f"source.path {self.path!r} does not exist (looked at {resolved})")
            if not (resolved / "model_index.json").is_file():
                raise ValueError(
                    f"source.path {self.path!r} has no model_index.json: not a diffusers "
                    "pipeline folder (save it with pipeline.save_pretrained)"
                )
            self.path = str(resolved)
        return self


class PythonSource(_Strict):
    """A Python factory `pkg.module:function` that returns a diffusers-compatible pipeline."""

    kind: Literal["python"]
    entrypoint: str = Field(description="pkg.module:function returning a pipeline")

    @field_validator("entrypoint")
    @classmethod
    def _entrypoint_form(cls, v: str) -> str:
        if not _ENTRYPOINT.match(v):
            raise ValueError("must look like 'package.module:function'")
        return v


Source = Annotated[DiffusersSource | PythonSource, Field(discriminator="kind")]


class ModelCard(_Strict):
    """What a model developer declares about a model. Versioned by (name, version)."""

    schema_version: Literal[1] = CARD_SCHEMA_VERSION
    name: str = Field(pattern=_SLUG, description="lower-case id, e.g. tiny-flat-s")
    version: str = Field(pattern=r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,31}$", description="quoted")
    owner: str = Field(min_length=1, max_length=128)
    description: str = ""
    styles: list[Annotated[str, Field(pattern=_SLUG)]] = Field(min_length=1)
    source: Source
    scheduler: str = Field(description=f"one of {sorted(SCHEDULERS)}")
    resolutions: list[str] = Field(min_length=1, description="'WIDTHxHEIGHT', multiples of 8")
    steps: StepRange
    guidance_scale: float = Field(ge=0.0, le=50.0)
    accelerators: list[Annotated[str, Field(min_length=1)]] = Field(
        min_length=1, description="accelerator names or patterns: cpu, cuda, '*A100*', '*'"
    )
    style_prompt: str = Field(
        default="{prompt}",
        description="how a job's style reaches the model: a template with {prompt} and "
        "optionally {style}, e.g. '{prompt}, {style} style' for a model trained that way",
    )

    @field_validator("style_prompt")
    @classmethod
    def _template(cls, v: str) -> str:
        names = {f for _, f, _, _ in string.Formatter().parse(v) if f is not None}
        if "prompt" not in names:
            raise ValueError("must contain {prompt}")
        if names - {"prompt", "style"}:
            raise ValueError(f"unknown placeholders {sorted(names - {'prompt', 'style'})}")
        return v

    def styled_prompt(self, prompt: str, style: str | None) -> str:
        """The text the model sees for a job's prompt in `style`."""
        if style is None:
            return prompt
        return self.style_prompt.format(prompt=prompt, style=style)

    @field_validator("scheduler")
    @classmethod
    def _known_scheduler(cls, v: str) -> str:
        if v not in SCHEDULERS:
            raise ValueError(f"unknown scheduler; known: {', '.join(sorted(SCHEDULERS))}")
        return v

    @field_validator("resolutions")
    @classmethod
    def _resolutions(cls, v: list[str]) -> list[str]:
        for r in v:
            m = _RESOLUTION.match(r)
            if not m:
                raise ValueError(f"resolution {r!r} is not 'WIDTHxHEIGHT' (e.g. '512x512')")
            w, h = int(m[1]), int(m[2])
            if w % 8 or h % 8 or not (8 <= w <= 4096 and 8 <= h <= 4096):
                raise ValueError(f"resolution {r!r}: sides must be multiples of 8 in 8..4096")
        if len(set(v)) != len(v):
            raise ValueError("resolutions repeat")
        return v

    @field_validator("styles")
    @classmethod
    def _unique_styles(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("styles repeat")
        return v

    # Derived views the rest of the system uses, so nobody re-parses strings.
    @property
    def resolution_pairs(self) -> list[tuple[int, int]]:
        """(width, height) per declared resolution."""
        return [tuple(int(x) for x in r.split("x")) for r in self.resolutions]  # type: ignore[misc]

    @property
    def key(self) -> str:
        return model_key(self.name, self.version)

    def runs_on(self, accelerator: str) -> bool:
        """Whether the card allows `accelerator`, a name as `sdaas/accelerator_names.py`
        gives it ('cpu-...', 'cuda-NVIDIA A100-SXM4-80GB') or a torch device ('cuda:1').

        A pattern without wildcards matches as a prefix ('cuda' matches every CUDA GPU);
        matching ignores case.
        """
        name = accelerator.lower()
        for pat in self.accelerators:
            p = pat.lower()
            if any(c in p for c in "*?[") and fnmatch.fnmatchcase(name, p):
                return True
            if name.startswith(p):
                return True
        return False

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", exclude_none=True), sort_keys=False)


_TAGS = {"diffusers", "python"}


def _problem_from_pydantic(err: dict[str, Any], fields: set[str]) -> Problem:
    loc = [str(p) for p in err["loc"]]
    # Drop the discriminated-union tag pydantic inserts after 'source'.
    if len(loc) >= 2 and loc[0] == "source" and loc[1] in _TAGS:
        loc = [loc[0], *loc[2:]]
    field = ".".join(loc) or "<card>"
    why = err["msg"].removeprefix("Value error, ")
    value = err.get("input")
    for sub in ("path", "hub_id"):
        # Whole-source checks that are about one sub-field: name that field and its value.
        if field == "source" and why.startswith(f"source.{sub} ") and isinstance(value, dict):
            field, value = f"source.{sub}", value.get(sub)
    if err["type"] == "extra_forbidden":
        why = "unknown field" + (
            f"; known fields: {', '.join(sorted(fields))}" if len(loc) == 1 else ""
        )
    elif err["type"] == "missing":
        why = "required field is missing"
    elif field == "version" and err["type"] == "string_type":
        why = "must be a string: quote it in YAML, e.g. version: '1.0'"
    return Problem(field=field, value=None if err["type"] == "missing" else value, why=why)


def validate_card(
    data: Any,
    *,
    source: str = "<card>",
    model_roots: tuple[Path, ...] = (),
    base_dir: Path | None = None,
) -> ModelCard:
    """Validate a parsed card. Raises CardError naming every problem.

    model_roots: folders a local `source.path` must resolve into; empty means no restriction.
    base_dir: what a relative `source.path` is relative to (the card file's folder).
    """
    if not isinstance(data, dict):
        raise CardError(
            source, [Problem("<card>", type(data).__name__, "a card is a YAML mapping")]
        )
    context = {"model_roots": model_roots, "base_dir": base_dir or Path.cwd()}
    try:
        return ModelCard.model_validate(data, context=context)
    except ValidationError as exc:
        fields = set(ModelCard.model_fields)
        problems = [_problem_from_pydantic(e, fields) for e in exc.errors()]
        raise CardError(source, problems) from None


def _yaml_why(exc: yaml.YAMLError) -> str:
    """'not valid YAML at line L, column C: what' (PyYAML's own text names the stream
    `<unicode string>`, not the file)."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    what = getattr(exc, "problem", None) or exc.__class__.__name__
    return f"not valid YAML{where}: {what}"


def load_card(path: Path, *, model_roots: tuple[Path, ...] = ()) -> ModelCard:
    """Read and validate a card file; relative source paths are relative to the file."""
    path = Path(path)
    if not path.is_file():
        why = "a directory, not a card file" if path.is_dir() else "no such card file"
        raise CardError(str(path), [Problem("<file>", str(path), why)])
    try:
        data = yaml.safe_load(path.read_text())
        if data is None:
            raise CardError(str(path), [Problem("<file>", str(path), "an empty file")])
    except yaml.YAMLError as exc:
        raise CardError(str(path), [Problem("<file>", str(path), _yaml_why(exc))]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CardError(str(path), [Problem("<file>", str(path), f"unreadable: {exc}")]) from None
    return validate_card(
        data, source=str(path), model_roots=model_roots, base_dir=path.resolve().parent
    )
