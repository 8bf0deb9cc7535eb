"""meterd's errors: one family of six kinds, and each edge answers by the kind."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import meterd
from meterd.api.errors import HttpError, status_of
from meterd.core.errors import (
    KINDS,
    ConflictError,
    InvalidError,
    MeterdError,
    NotFoundError,
    RateLimitedError,
    UnauthorizedError,
    UnavailableError,
    kind_of,
)


def meterd_modules() -> list[str]:
    return [
        m.name
        for m in pkgutil.walk_packages(meterd.__path__, "meterd.")
        if ".migrations" not in m.name
    ]


def exception_classes() -> list[type[BaseException]]:
    found = []
    for name in meterd_modules():
        module = importlib.import_module(name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == name:
                found.append(value)
    return found


def test_meterd_defines_exception_classes_to_check() -> None:
    assert len(exception_classes()) >= 15


@pytest.mark.parametrize("error", exception_classes(), ids=lambda c: f"{c.__module__}.{c.__name__}")
def test_every_exception_class_belongs_to_the_family(error: type[BaseException]) -> None:
    assert issubclass(error, MeterdError)


@pytest.mark.parametrize("error", exception_classes(), ids=lambda c: f"{c.__module__}.{c.__name__}")
def test_every_exception_class_is_of_exactly_one_kind_or_the_http_edge(
    error: type[BaseException],
) -> None:
    kinds = [kind for kind in KINDS if issubclass(error, kind)]
    if error is MeterdError or issubclass(error, HttpError):
        assert kinds == []
    else:
        assert len(kinds) == 1, f"{error.__name__} is of {kinds}"


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        (NotFoundError, 404),
        (ConflictError, 409),
        (InvalidError, 400),
        (UnavailableError, 503),
        (UnauthorizedError, 401),
        (RateLimitedError, 429),
    ],
)
def test_each_kind_has_its_http_status(kind: type[MeterdError], status: int) -> None:
    error = kind("thing", "x") if kind is NotFoundError else kind("why")  # type: ignore[call-arg]
    assert status_of(error) == status
    assert kind_of(error) is kind


def test_the_kinds_keep_the_builtin_bases_callers_catch() -> None:
    assert issubclass(InvalidError, ValueError)
    assert issubclass(NotFoundError, LookupError)
