"""The split test matrix (conftest.split_backends): which backend each database test keeps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from etl_assets_tests.conftest import split_backends

BACKENDS = ["sqlite", "postgres"]


@dataclass
class _Callspec:
    params: dict[str, Any]


@dataclass
class _Item:
    """What split_backends reads of a collected test: its id, its parameters and its markers."""

    nodeid: str
    callspec: _Callspec | None
    markers: set[str] = field(default_factory=set)

    def get_closest_marker(self, name: str) -> object | None:
        return name if name in self.markers else None


def _item(name: str, backend: str | None, markers: set[str] | None = None, **params: Any) -> _Item:
    values = {**params, **({"backend": backend} if backend is not None else {})}
    suffix = "-".join(str(v) for v in values.values())
    nodeid = f"etl_assets_tests/test_x.py::{name}" + (f"[{suffix}]" if suffix else "")
    return _Item(nodeid, _Callspec(values) if values else None, markers or set())


def _backends(items: list[Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for i in items:
        out.setdefault(i.nodeid.split("[")[0] + str(i.callspec.params.get("kind", "")), []).append(
            i.callspec.params["backend"]
        )
    return out


def test_each_graph_test_keeps_one_backend_and_both_are_covered() -> None:
    items = [_item(f"test_{n}", b) for n in range(40) for b in BACKENDS]
    kept, dropped = split_backends(items, BACKENDS)  # type: ignore[arg-type]
    assert len(kept) == 40 and len(dropped) == 40
    assert all(len(v) == 1 for v in _backends(kept).values())  # one backend per test, never none
    assert {b for v in _backends(kept).values() for b in v} == set(BACKENDS)  # both covered
    again, _ = split_backends(list(reversed(items)), BACKENDS)  # type: ignore[arg-type]
    assert {i.nodeid for i in again} == {i.nodeid for i in kept}  # stable: the order does not matter


def test_other_parameters_make_their_own_group() -> None:
    items = [_item("test_a", b, kind=k) for k in ("x", "y", "z", "w") for b in BACKENDS]
    kept, _ = split_backends(items, BACKENDS)  # type: ignore[arg-type]
    assert sorted(_backends(kept)) == [f"etl_assets_tests/test_x.py::test_a{k}" for k in "wxyz"]
    assert all(len(v) == 1 for v in _backends(kept).values())


@pytest.mark.parametrize(
    "items",
    [
        [_item("test_db", b, {"both_backends"}) for b in BACKENDS],  # about the database itself
        [_item("test_one", "sqlite")],  # parametrized with one backend only
        [_item("test_plain", None)],  # not about a database
    ],
    ids=["both_backends marker", "one backend", "no backend"],
)
def test_what_is_not_split_keeps_every_item(items: list[_Item]) -> None:
    kept, dropped = split_backends(items, BACKENDS)  # type: ignore[arg-type]
    assert kept == items and dropped == []
