"""What every part of the catalog shares: its error, the "left alone" marker of a
change, and the rule that a granted quantity fits its feature's scale."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Protocol

from meterd.core.errors import InvalidError
from meterd.core.quantity import QuantityError, check_scaled


class CatalogError(InvalidError):
    """A request to the catalog that cannot be carried out as asked."""


class _Unset:
    """Marks a field a change leaves alone (None means "set to null")."""


UNSET: Any = _Unset()


class Scaled(Protocol):
    """Anything with a feature's scale (a feature row or value)."""

    @property
    def scale(self) -> int: ...


def check_grant(feature: Scaled, **quantities: Decimal | None) -> None:
    """Each quantity given (by its field name) fits ``feature``'s scale: no more
    fractional digits than it counts, within what a counter at that scale holds
    exactly (``quantity.check_scaled``)."""
    for name, value in quantities.items():
        if value is None or value is UNSET:
            continue
        try:
            check_scaled(value, feature.scale, name)
        except QuantityError as exc:
            # Too many fractional digits is reported as "quantity ...": name the field.
            if str(exc).startswith(f"{name} "):
                raise
            raise QuantityError(f"{name}: {exc}") from None
