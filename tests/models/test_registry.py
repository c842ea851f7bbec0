"""Registry: history, refusals leave it unchanged, persistence and concurrent writers."""

from __future__ import annotations

import json
import multiprocessing as mp
import subprocess
import sys

import pytest
import yaml

from models.card import CardError, validate_card
from models.registry import Registry
from sdaas.errors import NotFoundError
from tests.conftest import make_card, run_cli


def _snapshot(reg: Registry) -> list:
    return [(r.seq, r.card.model_dump_json()) for r in reg._rows()]


def _write(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def reg(settings) -> Registry:
    return Registry(settings.registry_path, model_roots=settings.model_roots)


def test_register_list_show_remove(reg, model_dir, tmp_path):
    reg.register_file(_write(tmp_path / "a.yaml", make_card(model_dir, name="a", styles=["flat"])))
    reg.register_file(_write(tmp_path / "b.yaml", make_card(model_dir, name="b", styles=["anime"])))
    assert [r.card.name for r in reg.list()] == ["a", "b"]
    assert [r.card.name for r in reg.list(style="anime")] == ["b"]
    assert reg.styles() == ["anime", "flat"]
    assert reg.get("a").styles == ["flat"]
    assert reg.remove("a") == 1
    assert [r.card.name for r in reg.list()] == ["b"]
    with pytest.raises(NotFoundError, match="registered: b"):
        reg.get("a")


def test_new_version_keeps_history_and_becomes_latest(reg, model_dir):
    v1 = validate_card(make_card(model_dir, version="1.0"))
    v2 = validate_card(make_card(model_dir, version="2.0", guidance_scale=3.0))
    reg.register(v1)
    reg.register(v2)
    assert [r.card.version for r in reg.versions("tiny-test")] == ["1.0", "2.0"]
    assert reg.get("tiny-test").version == "2.0"
    assert reg.get("tiny-test", "1.0").guidance_scale == 7.5
    assert len(reg.list()) == 1
    reg.remove("tiny-test", "2.0")
    assert reg.get("tiny-test").version == "1.0"


def test_duplicate_name_version_is_refused_and_registry_unchanged(reg, model_dir):
    reg.register(validate_card(make_card(model_dir)))
    before = _snapshot(reg)
    with pytest.raises(CardError) as exc:
        reg.register(validate_card(make_card(model_dir, guidance_scale=1.0)))
    (p,) = exc.value.problems
    assert p.field == "version" and "already registered" in p.why and "bump" in p.why
    assert _snapshot(reg) == before


def test_identical_reregistration_is_idempotent_with_exist_ok(reg, model_dir):
    first = reg.register(validate_card(make_card(model_dir)))
    again = reg.register(validate_card(make_card(model_dir)), exist_ok=True)
    assert again.seq == first.seq
    with pytest.raises(CardError):
        reg.register(validate_card(make_card(model_dir, owner="someone-else")), exist_ok=True)


def test_invalid_card_file_reports_duplicate_too_and_changes_nothing(reg, model_dir, tmp_path):
    reg.register(validate_card(make_card(model_dir)))
    before = _snapshot(reg)
    bad = _write(tmp_path / "bad.yaml", make_card(model_dir, scheduler="magic", styles=[]))
    with pytest.raises(CardError) as exc:
        reg.register_file(bad)
    assert sorted(p.field for p in exc.value.problems) == ["scheduler", "styles", "version"]
    assert _snapshot(reg) == before


def test_remove_unknown_is_not_found(reg):
    with pytest.raises(NotFoundError, match="registry is empty"):
        reg.remove("ghost")


def test_registry_survives_across_processes(settings, model_dir, tmp_path):
    card_path = _write(tmp_path / "c.yaml", make_card(model_dir))
    code = (
        "import sys; from models.registry import Registry; from sdaas.config import Settings;"
        "s=Settings(home=__import__('pathlib').Path(sys.argv[1]));"
        "Registry(s.registry_path, model_roots=s.model_roots).register_file(sys.argv[2])"
    )
    subprocess.run([sys.executable, "-c", code, str(settings.home), str(card_path)], check=True)
    reg = Registry(settings.registry_path, model_roots=settings.model_roots)
    assert reg.get("tiny-test").key == "tiny-test@1.0"
    proc = run_cli("--home", str(settings.home), "models", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    listing = proc.stdout
    assert [c["name"] for c in json.loads(listing)] == ["tiny-test"]


def _register_worker(args):
    home, model_dir, version = args
    from pathlib import Path

    from models.card import CardError as _CardError
    from sdaas.config import Settings

    s = Settings(home=Path(home))
    reg = Registry(s.registry_path, model_roots=s.model_roots)
    try:
        reg.register(validate_card(make_card(Path(model_dir), version=version)))
        return "ok"
    except _CardError:
        return "duplicate"


def test_concurrent_writers_do_not_corrupt_the_store(settings, model_dir):
    Registry(settings.registry_path)  # create the schema once
    # 16 distinct versions plus 8 racers on one version: all distinct ones land, one racer wins.
    jobs = [(str(settings.home), str(model_dir), f"v{i}") for i in range(16)]
    jobs += [(str(settings.home), str(model_dir), "race")] * 8
    with mp.get_context("spawn").Pool(4) as pool:
        outcomes = pool.map(_register_worker, jobs)
    assert outcomes[:16] == ["ok"] * 16
    assert sorted(outcomes[16:]) == ["duplicate"] * 7 + ["ok"]
    reg = Registry(settings.registry_path, model_roots=settings.model_roots)
    versions = [r.card.version for r in reg.versions("tiny-test")]
    assert sorted(versions) == sorted([f"v{i}" for i in range(16)] + ["race"])
    seqs = [r.seq for r in reg.versions("tiny-test")]
    assert seqs == sorted(set(seqs))
