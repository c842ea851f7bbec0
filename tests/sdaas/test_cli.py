"""The command line: real exit codes, messages that name the problem, help that explains."""

from __future__ import annotations

import pytest
import yaml

from sdaas.cli import main
from tests.conftest import make_card, run_cli


def _sdaas(settings, *args):
    return main(["--home", str(settings.home), *args])


def _card_file(tmp_path, model_dir, name="c.yaml", **overrides):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(make_card(model_dir, **overrides)))
    return str(path)


def test_register_list_show_remove_exit_codes(settings, model_dir, tmp_path, capsys):
    assert _sdaas(settings, "models", "register", _card_file(tmp_path, model_dir)) == 0
    assert "registered tiny-test@1.0" in capsys.readouterr().out
    assert _sdaas(settings, "models", "list") == 0
    assert "tiny-test" in capsys.readouterr().out
    assert _sdaas(settings, "models", "list", "--style", "anime") == 0
    assert "no models registered serving style 'anime'" in capsys.readouterr().out
    assert _sdaas(settings, "models", "show", "tiny-test") == 0
    out = capsys.readouterr().out
    assert "name: tiny-test" in out and "# versions" in out
    assert _sdaas(settings, "models", "remove", "tiny-test") == 0
    assert _sdaas(settings, "models", "show", "tiny-test") == 3
    assert "no registered model tiny-test" in capsys.readouterr().err


def test_invalid_card_exits_2_names_every_problem_and_changes_nothing(
    settings, model_dir, tmp_path, capsys
):
    bad = _card_file(tmp_path, model_dir, scheduler="magic", steps={"min": 9, "max": 1})
    assert _sdaas(settings, "models", "register", bad) == 2
    err = capsys.readouterr().err
    assert "scheduler: 'magic': unknown scheduler" in err
    assert "steps.min (9) is greater than steps.max (1)" in err
    assert _sdaas(settings, "models", "list", "--json") == 0
    assert capsys.readouterr().out.strip() == "[]"


def test_duplicate_registration_exits_2(settings, model_dir, tmp_path, capsys):
    card = _card_file(tmp_path, model_dir)
    assert _sdaas(settings, "models", "register", card) == 0
    assert _sdaas(settings, "models", "register", card) == 2
    assert "already registered" in capsys.readouterr().err
    assert _sdaas(settings, "models", "register", "--exist-ok", card) == 0


def test_remove_unknown_exits_3(settings, capsys):
    assert _sdaas(settings, "models", "remove", "ghost") == 3
    assert "ghost" in capsys.readouterr().err


def test_generate_writes_an_image_named_by_prompt_id(settings, model_dir, tmp_path, capsys):
    assert _sdaas(settings, "models", "register", _card_file(tmp_path, model_dir)) == 0
    secret = "a very private prompt about zebras"
    assert (
        _sdaas(settings, "generate", "--model", "tiny-test", "--prompt", secret, "--steps", "2")
        == 0
    )
    out = capsys.readouterr()
    assert "zebras" not in out.out + out.err
    (png,) = settings.outputs_dir.glob("*.png")
    assert "zebras" not in png.name
    assert (
        _sdaas(settings, "generate", "--model", "tiny-test", "--prompt", "x", "--steps", "99") == 2
    )
    assert "serves 1..50" in capsys.readouterr().err


def test_usage_errors_exit_2_and_help_explains():
    with pytest.raises(SystemExit) as exc:
        main(["models", "register"])
    assert exc.value.code == 2
    proc = run_cli("--help")
    assert proc.returncode == 0
    for word in ("models", "generate", "demo", "Exit codes"):
        assert word in proc.stdout
    proc = run_cli("models", "register", "--help")
    assert "every problem named" in " ".join(proc.stdout.split())


def test_real_process_exit_code_for_bad_card(settings, model_dir, tmp_path):
    bad = _card_file(tmp_path, model_dir, styles=[])
    proc = run_cli("--home", str(settings.home), "models", "register", bad)
    assert proc.returncode == 2
    assert "styles: []" in proc.stderr


def test_one_bad_card_in_a_batch_registers_nothing(settings, model_dir, tmp_path, capsys):
    good = _card_file(tmp_path, model_dir, name="good.yaml")
    bad = _card_file(tmp_path, model_dir, name="bad.yaml", styles=[])
    assert _sdaas(settings, "models", "register", good, bad) == 2
    err = capsys.readouterr().err
    assert "nothing registered" in err and "bad.yaml" in err
    assert _sdaas(settings, "models", "list", "--json") == 0
    assert capsys.readouterr().out.strip() == "[]"
