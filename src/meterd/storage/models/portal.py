"""Portal signing keys (issue 24): the secrets that sign customer portal tokens.

They live in the database, not in settings, so that every API replica verifies a
token another replica minted and nothing needs configuring. One key is current
(the newest ``generation`` not retired); ``generation`` is unique, so two replicas
creating the first key at once end with one (``storage/portal_keys.py``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from meterd.storage.models.base import Base, UtcDateTime


class PortalSigningKey(Base):
    """One HS256 secret; a token's header ``kid`` names it. A retired key signs no
    new token; those it signed still verify until they expire. Deleting the row
    invalidates every token it signed."""

    __tablename__ = "portal_signing_keys"
    __table_args__ = (UniqueConstraint("generation", name="uq_portal_signing_keys_generation"),)

    #: The token header's ``kid``: ``pk_`` + 16 hex digits.
    kid: Mapped[str] = mapped_column(String(32), primary_key=True)
    #: 1, 2, ...: unique, so concurrent creators of the same generation race on it.
    generation: Mapped[int] = mapped_column(Integer)
    #: 32 random bytes.
    secret: Mapped[bytes] = mapped_column(LargeBinary(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    retired_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
