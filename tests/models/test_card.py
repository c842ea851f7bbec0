"""Card validation: every bad case is named (field, value, why), all problems at once."""

from __future__ import annotations

import pytest
import yaml

from models.card import CardError, load_card, validate_card
from tests.conftest import make_card


def _problems(data, settings, **kw):
    with pytest.raises(CardError) as exc:
        validate_card(data, model_roots=settings.model_roots, **kw)
    return exc.value.problems


def test_valid_card_resolves_path_and_derives_views(settings, model_dir):
    card = validate_card(make_card(model_dir), model_roots=settings.model_roots)
    assert card.source.path == str(model_dir.resolve())
    assert card.resolution_pairs == [(64, 64)]
    assert card.key == "tiny-test@1.0"


@pytest.mark.parametrize(
    ("override", "field", "value", "why"),
    [
        ({"colour": "red"}, "colour", "red", "unknown field"),
        ({"steps": {"min": "five", "max": 50}}, "steps.min", "five", "valid integer"),
        ({"guidance_scale": "high"}, "guidance_scale", "high", "valid number"),
        (
            {"steps": {"min": 30, "max": 10}},
            "steps",
            {"min": 30, "max": 10},
            "greater than steps.max",
        ),
        ({"styles": []}, "styles", [], "at least 1"),
        ({"scheduler": "magic"}, "scheduler", "magic", "unknown scheduler; known: ddim"),
        ({"resolutions": ["64by64"]}, "resolutions", ["64by64"], "WIDTHxHEIGHT"),
        ({"resolutions": ["60x64"]}, "resolutions", ["60x64"], "multiples of 8"),
        ({"version": 1.0}, "version", 1.0, "quote it"),
        ({"name": "Bad Name!"}, "name", "Bad Name!", "pattern"),
        ({"accelerators": []}, "accelerators", [], "at least 1"),
        (
            {"source": {"kind": "onnx", "path": "x"}},
            "source",
            {"kind": "onnx", "path": "x"},
            "kind",
        ),
        (
            {"source": {"kind": "python", "entrypoint": "no colon"}},
            "source.entrypoint",
            "no colon",
            "package.module:function",
        ),
    ],
)
def test_each_bad_field_is_named_with_value_and_reason(
    settings, model_dir, override, field, value, why
):
    problems = _problems(make_card(model_dir, **override), settings)
    assert len(problems) == 1, problems
    (p,) = problems
    assert p.field == field
    assert p.value == value
    assert why in p.why


def test_missing_field_is_named(settings, model_dir):
    data = make_card(model_dir)
    del data["owner"]
    (p,) = _problems(data, settings)
    assert (p.field, p.why) == ("owner", "required field is missing")


def test_source_path_that_does_not_exist(settings):
    missing = settings.models_dir / "nope"
    (p,) = _problems(make_card(missing), settings)
    assert (p.field, p.value) == ("source.path", str(missing))
    assert "does not exist" in p.why and "nope" in p.why


def test_source_path_escaping_the_model_roots(settings, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    (p,) = _problems(make_card(settings.models_dir / ".." / ".." / outside.name), settings)
    assert "outside the allowed model roots" in p.why
    assert "SDAAS_MODEL_ROOTS" in p.why


def test_symlink_out_of_the_roots_is_refused(settings, tiny_dir):
    link = settings.models_dir / "sneaky"
    link.symlink_to(tiny_dir / "tiny-sketch-s", target_is_directory=True)
    (p,) = _problems(make_card(link), settings)
    assert "outside the allowed model roots" in p.why


def test_folder_without_model_index_is_refused(settings):
    empty = settings.models_dir / "empty"
    empty.mkdir()
    (p,) = _problems(make_card(empty), settings)
    assert "model_index.json" in p.why


def test_path_and_hub_id_are_exclusive(settings, model_dir):
    (p,) = _problems(
        make_card(model_dir, source={"kind": "diffusers", "path": str(model_dir), "hub_id": "a/b"}),
        settings,
    )
    assert "exactly one" in p.why


def test_every_problem_is_reported_at_once(settings, model_dir):
    data = make_card(
        model_dir,
        styles=[],
        scheduler="magic",
        steps={"min": 9, "max": 2},
        extra_field=1,
        guidance_scale=-1,
    )
    fields = sorted(p.field for p in _problems(data, settings))
    assert fields == ["extra_field", "guidance_scale", "scheduler", "steps", "styles"]


def test_error_message_lists_every_problem(settings, model_dir):
    with pytest.raises(CardError) as exc:
        validate_card(make_card(model_dir, styles=[], scheduler="magic"), source="c.yaml")
    msg = str(exc.value)
    assert "c.yaml" in msg and "2 problem(s)" in msg
    assert "styles: []" in msg and "scheduler: 'magic'" in msg
    assert exc.value.exit_code == 2


def test_load_card_relative_path_is_relative_to_the_card_file(settings, model_dir):
    card_path = settings.models_dir / "cards" / "c.yaml"
    card_path.parent.mkdir()
    card_path.write_text(yaml.safe_dump(make_card("../tiny-sketch-s")))
    card = load_card(card_path, model_roots=settings.model_roots)
    assert card.source.path == str(model_dir.resolve())


def test_load_card_bad_yaml_and_non_mapping(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(CardError, match="not valid YAML"):
        load_card(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- a\n- b\n")
    with pytest.raises(CardError, match="YAML mapping"):
        load_card(lst)
    with pytest.raises(CardError, match="no such card file"):
        load_card(tmp_path / "absent.yaml")


@pytest.mark.parametrize(
    ("patterns", "accelerator", "ok"),
    [
        (["cpu"], "cpu-AMD EPYC 7B13", True),
        (["cpu"], "cuda-NVIDIA A100", False),
        (["cuda"], "cuda-NVIDIA H100 80GB HBM3", True),
        (["cuda"], "cuda:1", True),
        (["*a100*"], "cuda-NVIDIA A100-SXM4-80GB", True),
        (["*a100*"], "cuda-NVIDIA T4", False),
        (["*"], "anything", True),
    ],
)
def test_runs_on(settings, model_dir, patterns, accelerator, ok):
    card = validate_card(make_card(model_dir, accelerators=patterns))
    assert card.runs_on(accelerator) is ok


def test_card_yaml_round_trip(settings, model_dir):
    card = validate_card(make_card(model_dir), model_roots=settings.model_roots)
    again = validate_card(yaml.safe_load(card.to_yaml()), model_roots=settings.model_roots)
    assert again == card


def test_style_prompt_template(settings, model_dir):
    card = validate_card(make_card(model_dir, style_prompt="{prompt}, {style} style"))
    assert card.styled_prompt("a red cat", "flat") == "a red cat, flat style"
    assert card.styled_prompt("a red cat", None) == "a red cat"
    assert validate_card(make_card(model_dir)).styled_prompt("x", "flat") == "x"
    (p,) = _problems(make_card(model_dir, style_prompt="{style} only"), settings)
    assert (p.field, p.why) == ("style_prompt", "must contain {prompt}")
    (p,) = _problems(make_card(model_dir, style_prompt="{prompt} {mood}"), settings)
    assert "unknown placeholders ['mood']" in p.why


@pytest.mark.parametrize(
    ("content", "why"),
    [(b"\xff\xfe\x00bad", "unreadable"), (b"", "an empty file"), (None, "a directory")],
)
def test_a_card_file_that_is_no_card_is_refused_with_why(tmp_path, content, why):
    path = tmp_path / "card.yaml"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    with pytest.raises(CardError) as e:
        load_card(path)
    assert why in str(e.value)
