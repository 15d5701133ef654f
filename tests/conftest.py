"""Shared fixtures: ledgers on SQLite files and, where configured, on Postgres."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

POSTGRES_ENV = "SELFLAB_TEST_POSTGRES_URL"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.sqlite'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty Postgres database, dropped afterwards."""
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        pytest.skip(f"{POSTGRES_ENV} is not set")
    url = sa.make_url(base).set(drivername="postgresql+psycopg")
    name = f"selflab_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_url(request: pytest.FixtureRequest) -> str:
    """Each ledger test runs on SQLite and on Postgres."""
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return request.getfixturevalue(fixture)


def quadratic_config(**overrides: Any) -> dict[str, Any]:
    """A small campaign over ``labdrivers:Quadratic`` as a plain dict."""
    config: dict[str, Any] = {
        "name": "quad",
        "seed": 0,
        "parameters": [
            {"name": "x", "type": "float", "low": 0, "high": 1},
            {"name": "z", "type": "float", "low": 0, "high": 1},
        ],
        "objectives": [{"name": "y", "direction": "maximize"}],
        "instruments": [{"name": "q1", "driver": "labdrivers:Quadratic", "options": {}}],
        "planner": {"kind": "random"},
        "stop": {"max_experiments": 10},
    }
    config.update(overrides)
    return config
