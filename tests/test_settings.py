import re
from pathlib import Path

import pytest

from app.settings import SETTINGS, Settings, SettingsError, check_declared

README = Path(__file__).resolve().parent.parent / "README.md"


def test_every_setting_is_documented_in_the_readme():
    documented = dict(re.findall(r"^\| `([A-Z_]+)` \| `([^`]*)` \|", README.read_text(), re.M))
    declared = {s.name: s.default for s in SETTINGS}
    assert documented == declared


def test_settings_table_matches_the_settings_class():
    check_declared()


def test_defaults_use_a_sqlite_file_under_var():
    settings = Settings.from_env({})
    assert settings.database_url == "sqlite:///var/whereabouts.db"
    assert settings.port == 8000


def test_postgresql_url_is_accepted_unchanged():
    settings = Settings.from_env({"DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/x"})
    assert settings.database_url == "postgresql://postgres@127.0.0.1:5432/x"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "eighty"),
        ("PORT", "-1"),
        ("DATABASE_URL", "mysql://root@localhost/db"),
        ("PUBLIC_URL", "track.example.com"),
        ("LOG_LEVEL", "loud"),
    ],
)
def test_bad_values_name_the_setting(name, value):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})
