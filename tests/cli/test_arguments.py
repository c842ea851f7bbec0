"""The shared argument types: one comma-list parser for every list flag."""

from __future__ import annotations

import argparse

import pytest

from cli.arguments import comma_list
from cli.main import main


def test_comma_list_parses_each_kind_and_skips_blank_items():
    assert comma_list(int, "--steps")("1, 2,,4") == (1, 2, 4)
    assert comma_list(float, "--loads")("0.5,1") == (0.5, 1.0)
    assert comma_list(str, "--models")(" a, b ,") == ("a", "b")
    assert comma_list(int, "--steps")("") == ()


def test_a_bad_value_names_the_flag(capsys):
    with pytest.raises(argparse.ArgumentTypeError, match=r"^--steps '1,x': .* integers"):
        comma_list(int, "--steps")("1,x")
    with pytest.raises(argparse.ArgumentTypeError, match=r"^--loads 'a': .* numbers"):
        comma_list(float, "--loads")("a")
    with pytest.raises(SystemExit) as exc:
        main(["profile", "--seeds", "0,a"])
    assert exc.value.code == 2
    assert "--seeds '0,a': give comma-separated integers" in capsys.readouterr().err
