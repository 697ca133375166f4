"""Settings: precedence, validation, and that every one is documented in the README."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from mailseen.config import Settings, load_settings, setting_help, settings_table
from mailseen.errors import InvalidInput

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_setting_has_help_and_the_readme_table_is_current() -> None:
    readme = README.read_text()
    for name, help_text in setting_help().items():
        assert help_text.strip(), name
        assert f"`MAILSEEN_{name.upper()}`" in readme, f"{name} missing from README"
    start = readme.index("-->\n", readme.index("<!-- settings table")) + 4
    end = readme.index("<!-- /settings table -->")
    assert readme[start:end] == settings_table(), "run scripts/readme-settings"


def test_options_beat_environment_beat_file_beat_defaults(tmp_path: Path) -> None:
    conf = tmp_path / "mailseen.toml"
    conf.write_text('port = 9001\nhost = "0.0.0.0"\npublic-url = "https://t.example.com"\n')
    env = {"MAILSEEN_PORT": "9002", "MAILSEEN_LOG_LEVEL": "debug"}
    s = load_settings({"port": 9003}, environ=env, config_file=conf)
    assert (s.port, s.host, s.log_level) == (9003, "0.0.0.0", "debug")
    assert s.base_url == "https://t.example.com"
    assert load_settings({}, environ=env, config_file=conf).port == 9002
    assert load_settings({}, environ={}, config_file=conf).port == 9001
    assert load_settings({}, environ={}).port == Settings().port


def test_defaults_are_the_embedded_setup() -> None:
    s = load_settings({}, environ={})
    assert s.database == "sqlite:///data/mailseen.db"
    assert s.base_url == "http://127.0.0.1:8000"


@pytest.mark.parametrize(("options", "field"), [
    ({"port": "eighty"}, "port"), ({"port": 70000}, "port"),
    ({"public_url": "example.com"}, "public_url"), ({"trusted_proxies": "10.0.0.300"},
                                                      "trusted_proxies"),
    ({"worker": "perhaps"}, "worker"), ({"password_memory_kib": 32}, "password_memory_kib"),
])
def test_bad_values_name_the_setting(options: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        load_settings(options, environ={})
    assert err.value.field == field


def test_unknown_keys_in_the_config_file_are_refused(tmp_path: Path) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text("prot = 1\n")
    with pytest.raises(InvalidInput, match="unknown setting 'prot'"):
        load_settings({}, environ={}, config_file=conf)


def test_trusted_proxies_parse_addresses_and_networks() -> None:
    s = load_settings({"trusted_proxies": "10.0.0.1, 192.168.0.0/16,::1"}, environ={})
    assert [str(n) for n in s.trusted_proxies] == ["10.0.0.1/32", "192.168.0.0/16", "::1/128"]


def test_secret_key_is_generated_once_into_the_data_folder(tmp_path: Path) -> None:
    s = load_settings({"data_dir": tmp_path / "d"}, environ={})
    first = s.secret()
    assert len(first) >= 32 and s.secret() == first
    assert oct((tmp_path / "d" / "secret.key").stat().st_mode & 0o777) == "0o600"


def test_setting_names_are_plain_identifiers() -> None:
    assert all(re.fullmatch(r"[a-z_]+", f.name) for f in fields(Settings))


def test_password_hashes_use_the_configured_memory(tmp_path: Path) -> None:
    from mailseen.services.instance import Instance

    assert load_settings({}, environ={}).password_memory_kib == 65536  # RFC 9106's profile
    settings = load_settings({"data_dir": tmp_path, "password_memory_kib": 256,
                              "secret_key": "k" * 32}, environ={})
    inst = Instance.open(settings)
    try:
        user = inst.accounts.create_user("ada@example.com", "a long passphrase")
        stored = inst.store.find_user("ada@example.com")
        assert stored is not None and stored[1].startswith("$argon2id$v=19$m=256,t=3,p=4$")
        signed_in, _ = inst.accounts.sign_in("ada@example.com", "a long passphrase", "::1")
        assert signed_in.id == user.id
    finally:
        inst.db.dispose()
