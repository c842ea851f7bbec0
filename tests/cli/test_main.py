"""The command line: real exit codes, messages that name the problem, help that explains."""

from __future__ import annotations

import json

import pytest
import yaml

from cli.main import main
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


# -- CLI edges (issue 11) ------------------------------------------------------------------


def test_an_unknown_argument_is_named_even_without_a_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--nope"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --nope" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["models", "list", "--colour"])
    assert "unrecognized arguments: --colour" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["models"])
    assert "missing ACTION" in capsys.readouterr().err


def test_generate_refuses_bad_devices_paths_and_prompts_with_exit_2(
    settings, model_dir, tmp_path, capsys
):
    assert _sdaas(settings, "models", "register", _card_file(tmp_path, model_dir)) == 0
    capsys.readouterr()
    gen = ["generate", "--model", "tiny-test", "--steps", "1"]
    cases = [
        (["--prompt", "x", "--device", "banana"], "device: 'banana': not a device"),
        (["--prompt", "x", "--device", "cuda:7"], "CUDA device(s); use cpu"),
        (["--prompt", "x", "--out", "/proc/x.png"], "--out: '/proc/x.png'"),
        (["--prompt", "x", "--out", str(tmp_path / "a.txt")], "must end in .png"),
        (["--prompt", "word " * 300], "--prompt: 1500 characters: over the 1000 limit"),
        (["--prompt", "   "], "--prompt: a str: must be non-empty text"),  # serving's rules
    ]
    for extra, needle in cases:
        assert _sdaas(settings, *gen, *extra) == 2, extra
        assert needle in capsys.readouterr().err, extra


def test_plan_refuses_negative_prompt_tokens_and_an_unbounded_slo(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["plan", "--style", "flat", "--latency-slo", "1", "--min-clip", "0",
              "--prompt-tokens", "-5"])  # fmt: skip
    assert exc.value.code == 2
    assert "--prompt-tokens -5: must be in 0..77" in capsys.readouterr().err


def test_a_yaml_syntax_error_names_the_card_file_and_the_line(settings, tmp_path, capsys):
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: x\nstyles: [flat\nversion: '1'\n")
    assert _sdaas(settings, "models", "register", str(bad)) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "not valid YAML at line" in err
    assert "<unicode string>" not in err


def test_results_reports_a_corrupted_or_missing_store_without_a_traceback(settings):
    r = run_cli("--home", str(settings.home), "results", "--admin", "--tenant", "a")
    assert r.returncode == 1 and "no result store at" in r.stderr
    assert not (settings.data_dir / "results" / "results.db").exists()  # not created empty
    db = settings.data_dir / "results" / "results.db"
    db.parent.mkdir(parents=True)
    db.write_bytes(b"garbage" * 1000)
    r = run_cli("--home", str(settings.home), "results", "--admin", "--tenant", "a")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert str(db) in r.stderr and "move it aside" in r.stderr


def test_tenants_keys_and_results_shown_only_to_their_tenant(settings, capsys):
    from adapters.result_store import ResultStore
    from sdaas.records import JobResult

    store = ResultStore(settings.data_dir / "results" / "results.db")
    store.put([JobResult("j1", "ann", "done"), JobResult("j2", "bob", "done")])
    assert _sdaas(settings, "tenants", "create", "ann") == 0
    ann_key = capsys.readouterr().out.strip().splitlines()[-1]
    assert ann_key.startswith("sdaas_")
    assert _sdaas(settings, "tenants", "create", "ops", "--operator") == 0
    assert "operator API key" in capsys.readouterr().out
    assert _sdaas(settings, "tenants", "list") == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[:3] for line in listed if line.startswith(("ann", "ops"))] == [
        ["ann", "1", "0"], ["ops", "1", "1"]]  # fmt: skip
    assert _sdaas(settings, "results", "--key", ann_key) == 0
    out = capsys.readouterr().out
    assert "j1" in out and "j2" not in out
    # without a key: refused, and told how
    assert _sdaas(settings, "results", "--tenant", "bob") == 2
    assert "--key KEY" in capsys.readouterr().err
    assert _sdaas(settings, "results", "--key", ann_key, "--tenant", "bob") == 2
    assert _sdaas(settings, "results", "--key", "sdaas_0.nope") == 2
    assert _sdaas(settings, "results", "--admin", "--tenant", "bob") == 0
    assert "j2" in capsys.readouterr().out
    assert _sdaas(settings, "tenants", "revoke", "ann") == 0
    assert _sdaas(settings, "results", "--key", ann_key) == 2
    assert _sdaas(settings, "tenants", "create", "bad/name") == 2


def test_results_show_a_tenants_dead_lettered_jobs_with_their_reason(settings, capsys):
    from adapters.result_store import ResultStore
    from sdaas.records import JobResult

    store = ResultStore(settings.data_dir / "results" / "results.db")
    store.put([JobResult("ok", "ann", "done")])
    store.put_dead_letters([
        {"source": "t/0/1", "tenant": "ann", "job_id": "bad", "reason": "style: 'x': unknown"},
        {"source": "t/0/2", "tenant": "bob", "job_id": "bobs", "reason": "seed: -1: must be"},
        {"source": "t/0/3", "tenant": "", "job_id": "", "reason": "message: not UTF-8"},
    ])  # fmt: skip
    assert _sdaas(settings, "results", "--admin", "--tenant", "ann", "--json") == 0
    got = {r["job_id"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(got) == {"ok", "bad"}  # bob's and the anonymous letter are not ann's
    assert got["bad"]["status"] == "rejected" and "style: 'x': unknown" in got["bad"]["error"]
    assert _sdaas(settings, "results", "--admin", "--tenant", "ann", "--job-id", "bad") == 0
    assert "dead letter: style: 'x': unknown" in capsys.readouterr().out
    assert _sdaas(settings, "results", "--admin", "--tenant", "ann", "--job-id", "bobs") == 3


def test_api_help_says_how_to_authenticate_and_where_it_listens():
    r = run_cli("api", "--help")
    assert r.returncode == 0
    assert "Bearer" in r.stdout and "127.0.0.1" in r.stdout and "tenants create" in r.stdout


def test_every_command_module_is_listed_with_add_parser_and_run():
    import importlib
    import pkgutil
    import re

    import cli.commands
    from cli.main import COMMANDS, build_parser

    names = sorted(m.name for m in pkgutil.iter_modules(cli.commands.__path__))
    assert sorted(c.__name__.rpartition(".")[2] for c in COMMANDS) == names
    listed = build_parser().format_help()
    for name in names:
        module = importlib.import_module(f"cli.commands.{name}")
        assert callable(module.add_parser) and callable(module.run), name
        assert re.search(rf"^ +{name} ", listed, re.MULTILINE), f"sdaas --help lacks {name}"


def test_a_broker_that_does_not_answer_or_an_empty_home_is_said_without_a_traceback(tmp_path):
    """What a user mistypes first: --bootstrap-servers (submit, and the API before it
    starts uvicorn), and a summary asked of a home with no sweep yet."""
    home = ["--home", str(tmp_path)]
    r = run_cli(*home, "submit", "--bootstrap-servers", "127.0.0.1:1", "--prompt", "x",
                "--style", "flat", "--latency-slo", "5", "--min-clip", "0")  # fmt: skip
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "cannot reach the Kafka broker at 127.0.0.1:1" in r.stderr and "sdaas broker" in r.stderr
    r = run_cli(*home, "profile", "--summary")
    assert r.returncode == 3 and "Traceback" not in r.stderr, r.stderr
    assert "run `sdaas profile` first" in r.stderr


def test_a_port_out_of_range_is_refused_by_the_parser():
    r = run_cli("broker", "--port", "99999")
    assert r.returncode == 2 and "--port 99999: must be in 1..65535" in r.stderr


def test_a_home_or_out_that_cannot_be_a_folder_and_a_damaged_registry_are_said(tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    r = run_cli("bench", "--out", str(a_file / "x"), "--jobs", "100")
    assert r.returncode == 1 and "Not a directory" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("--home", str(a_file), "models", "list")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    reg = tmp_path / "home" / "data" / "registry"
    reg.mkdir(parents=True)
    (reg / "registry.db").write_text("garbage, not sqlite")
    r = run_cli("--home", str(tmp_path / "home"), "models", "list")
    assert r.returncode == 1 and "is damaged" in r.stderr and "Traceback" not in r.stderr


def test_a_flag_that_would_do_nothing_or_a_tenant_with_no_keys_is_said(tmp_path):
    home = ["--home", str(tmp_path)]
    r = run_cli(*home, "tenants", "revoke", "nobody")
    assert r.returncode == 3 and "has no keys" in r.stderr
    r = run_cli(*home, "results", "--admin", "--tenant", "ann", "--wait", "3")
    assert r.returncode == 2 and "only with --job-id" in r.stderr


def test_a_home_that_does_not_exist_is_said_and_an_empty_one_has_nothing_stale(tmp_path):
    r = run_cli("--home", str(tmp_path / "typo"), "profile", "--stale")
    assert r.returncode == 0 and "does not exist: it is made, empty" in r.stderr
    assert "nothing served here yet" in r.stdout and "agrees" not in r.stdout
