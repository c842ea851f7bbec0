"""Prompt ids: stable under one salt, unlinkable across salts, never the prompt itself."""

from __future__ import annotations

import stat

from sdaas.privacy import load_salt, prompt_id


def test_prompt_id_is_stable_salted_and_opaque():
    a = prompt_id("a red cat", b"salt-1")
    assert a == prompt_id("a red cat", b"salt-1")
    assert a != prompt_id("a red cat", b"salt-2")
    assert a != prompt_id("a red dog", b"salt-1")
    assert len(a) == 16 and "cat" not in a


def test_salt_file_is_created_once_private(settings):
    s1 = load_salt(settings)
    s2 = load_salt(settings)
    assert s1 == s2 and len(s1) == 64
    assert stat.S_IMODE(settings.salt_path.stat().st_mode) == 0o600


def test_salt_from_environment_wins(settings, monkeypatch):
    monkeypatch.setenv("SDAAS_PROMPT_SALT", "from-env")
    assert load_salt(settings) == b"from-env"
    assert not settings.salt_path.exists()


def test_prompt_tokens_counts_words_and_punctuation_capped():
    from sdaas.privacy import prompt_tokens

    assert prompt_tokens("two small red circles, on the left.") == 9
    assert prompt_tokens("") == 0
    assert prompt_tokens("word " * 200) == 77
