"""State streamed batch by batch, in one protocol.

An audit keeps a few bounded statistics while it streams the dataset (each class's mean
maps, its exemplars, a sample of its small maps, the rows). Each is an :class:`Accumulator`:

- ``update(...)``: add a batch (its arguments are the statistic's own);
- ``merge(other)``: add another accumulator's batches, another rank's under torchrun; the
  result does not depend on the order, except for the float rounding of sums;
- ``state()`` and ``load(state)``: plain values and tensors for a ``weights_only``
  checkpoint, loaded into an ``empty()`` one of the same bounds.

:class:`Composite` makes an accumulator of accumulators from a dataclass's fields, and
:class:`Keyed` one per key, so a new streamed statistic is one class and one field: the
checkpoint and the torchrun merge follow.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol, Self, TypeVar, cast

import torch


class Accumulator(Protocol):
    def empty(self) -> Self:
        """The same kind, with the same bounds, holding nothing yet."""
        ...

    def merge(self, other: Self) -> None:
        """Add ``other``'s batches; ``other`` is not changed."""
        ...

    def state(self) -> Any:
        """Plain values and tensors only."""
        ...

    def load(self, state: Any) -> None:
        """Add a saved :meth:`state` (into an empty accumulator: become the saved one)."""
        ...


A = TypeVar("A", bound=Accumulator)


@dataclasses.dataclass
class Total:
    """A running sum of tensors of one shape, and how many items they sum."""

    value: torch.Tensor | None = None
    n: int = 0

    def update(self, value: torch.Tensor, n: int) -> None:
        self.value = value if self.value is None else self.value + value
        self.n += n

    def mean(self) -> torch.Tensor | None:
        return None if self.value is None or not self.n else self.value / self.n

    def empty(self) -> Total:
        return Total()

    def merge(self, other: Total) -> None:
        if other.value is not None:
            self.update(other.value, other.n)

    def state(self) -> dict[str, Any]:
        return {"value": self.value, "n": self.n}

    def load(self, state: dict[str, Any]) -> None:
        self.merge(Total(state["value"], int(state["n"])))


class Keyed(dict[Any, A]):
    """One accumulator per key. A key missing here is made by ``make`` when given (keys that
    appear as the stream goes), else as the empty of the accumulator being merged in."""

    def __init__(self, items: dict[Any, A] | None = None, make: Callable[[], A] | None = None):
        super().__init__(items or {})
        self.make = make

    def at(self, key: Any) -> A:
        """The accumulator of ``key``, made when it is not there yet."""
        if key not in self:
            if self.make is None:
                raise KeyError(key)
            self[key] = self.make()
        return self[key]

    def empty(self) -> Keyed[A]:
        return Keyed({k: v.empty() for k, v in self.items()}, self.make)

    def merge(self, other: Keyed[A]) -> None:
        for key, value in other.items():
            if key not in self and self.make is None:
                self[key] = value.empty()
            self.at(key).merge(value)

    def state(self) -> dict[Any, Any]:
        return {k: v.state() for k, v in self.items()}

    def load(self, state: dict[Any, Any]) -> None:
        for key, saved in state.items():
            self.at(key).load(saved)


class Composite:
    """Mixed into a dataclass whose fields are accumulators or ``int`` counts: empty, merge,
    state and load field by field (a count merges by addition)."""

    def empty(self) -> Self:
        return dataclasses.replace(cast(Any, self), **{
            name: 0 if isinstance(v, int) else v.empty() for name, v in _fields(self)
        })  # fmt: skip

    def merge(self, other: Self) -> None:
        for name, value in _fields(self):
            if isinstance(value, int):
                setattr(self, name, value + getattr(other, name))
            else:
                value.merge(getattr(other, name))

    def state(self) -> dict[str, Any]:
        return {name: v if isinstance(v, int) else v.state() for name, v in _fields(self)}

    def load(self, state: dict[str, Any]) -> None:
        for name, value in _fields(self):
            if isinstance(value, int):
                setattr(self, name, value + int(state[name]))
            else:
                value.load(state[name])


def _fields(obj: Any) -> list[tuple[str, Any]]:
    return [(f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj)]
