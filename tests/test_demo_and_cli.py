import datetime as dt
import os
import subprocess
import sys
from urllib.parse import urlsplit

import pytest

from app.demo import load_demo
from app.storage.schema import BACKORDER_TYPES

pytestmark = pytest.mark.anyio


async def test_demo_covers_every_case_and_every_link_answers(settings, client):
    loaded = await load_demo(settings, dt.datetime.now(dt.UTC))
    headers = {"Authorization": f"Bearer {loaded.api_key}"}
    seen_types = set()
    statuses = set()
    split = delayed = False
    for number, url in loaded.tracking_urls.items():
        assert url.startswith("https://track.example.test/t/")
        page = await client.get(urlsplit(url).path)
        assert page.status_code == 200
        assert f"Order {number}" in page.text
        assert (await client.get(urlsplit(url).path + ".json")).json()["order"]["number"] == number
        order = (await client.get(f"/api/v1/orders/{number}", headers=headers)).json()
        seen_types |= {line["backorder_type"] for line in order["lines"] if line["backorder_type"]}
        statuses |= {line["status"] for line in order["lines"]}
        statuses |= {parcel["status"] for parcel in order["shipments"]}
        split = split or len(order["shipments"]) > 1
        delayed = delayed or any(parcel["delayed"] for parcel in order["shipments"])
    assert seen_types == set(BACKORDER_TYPES)
    assert split
    assert delayed
    assert {"delivered", "shipped", "backordered", "in_transit"} <= statuses


def _cli(*args, env):
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_cli_creates_brand_and_keys_that_the_api_accepts_until_revoked(database_url, client):
    env = {"DATABASE_URL": database_url}
    created = _cli("brand", "create", "initech", "Initech", "--timezone", "Europe/Paris", env=env)
    assert created.returncode == 0, created.stderr
    again = _cli("brand", "create", "initech", "Initech", env=env)
    assert again.returncode == 1
    assert "already exists" in again.stderr
    minted = _cli("apikey", "create", "initech", env=env)
    assert minted.returncode == 0, minted.stderr
    key = minted.stdout.strip()
    assert key.startswith("wa_")
    headers = {"Authorization": f"Bearer {key}"}
    assert (await client.get("/api/v1/events", headers=headers)).status_code == 200
    revoked = _cli("apikey", "revoke", key[3:15], env=env)
    assert revoked.returncode == 0, revoked.stderr
    assert (await client.get("/api/v1/events", headers=headers)).status_code == 401
    assert _cli("apikey", "revoke", key[3:15], env=env).returncode == 1


def test_cli_rejects_a_bad_setting_by_name():
    result = _cli("migrate", env={"PORT": "not-a-port"})
    assert result.returncode == 2
    assert "PORT" in result.stderr


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_key_is_stored_only_as_a_hash(database_url, db):
    from sqlalchemy import select

    from app.storage.schema import api_keys

    minted = _cli("brand", "create", "hooli", "Hooli", env={"DATABASE_URL": database_url})
    assert minted.returncode == 0
    key = _cli("apikey", "create", "hooli", env={"DATABASE_URL": database_url}).stdout.strip()
    async with db.read() as conn:
        rows = (await conn.execute(select(api_keys))).mappings().all()
    stored = " ".join(str(value) for row in rows for value in row.values())
    assert key not in stored
    assert key[16:] not in stored
    assert key[3:15] in stored
