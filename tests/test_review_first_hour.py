"""Review of issue 20's first hour: no password of a URL setting on screen."""

from __future__ import annotations

import pytest
from sqlalchemy import make_url

from meterd.config import redact_url


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://meterd:it's-s3cret@db:5432/meterd",
        'postgresql://meterd:say"s3cret"@db:5432/meterd',
        "postgresql://meterd:two words@db:5432/meterd",
        "postgresql+psycopg://meterd@db/meterd?sslpassword=s3cret",
    ],
)
def test_a_url_setting_is_shown_without_the_password_sqlalchemy_reads_from_it(url: str) -> None:
    """The mask stopped at a quote or a space, which SQLAlchemy reads as part of the
    password, so ``meterd db upgrade``, ``dev`` and ``demo`` printed it whole."""
    parsed = make_url(url)
    secret = parsed.password or parsed.query["sslpassword"]
    assert isinstance(secret, str)
    assert secret not in redact_url(url)
    assert redact_url(url).startswith("postgresql")
