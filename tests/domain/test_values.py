"""`quick_init`: a frozen dataclass built faster behaves exactly as `dataclass` made it."""

from __future__ import annotations

import dataclasses
import pickle
from dataclasses import dataclass, field

import pytest

from billhook.domain.facts import Item, Order, SubscriptionFact
from billhook.domain.values import quick_init


@dataclass(frozen=True, order=True)
class Plain:
    a: int
    b: str
    c: tuple[int, ...] = ()


@quick_init
@dataclass(frozen=True, order=True)
class Quick:
    a: int
    b: str
    c: tuple[int, ...] = ()


def test_a_quick_value_is_built_compared_and_frozen_as_a_dataclass() -> None:
    for args, kwargs in [((1, "x"), {}), ((1,), {"b": "x", "c": (2,)}), ((), {"a": 1, "b": "x"})]:
        quick, plain = Quick(*args, **kwargs), Plain(*args, **kwargs)  # type: ignore[arg-type]
        assert dataclasses.astuple(quick) == dataclasses.astuple(plain)
        assert repr(quick) == repr(plain).replace("Plain", "Quick")
        assert hash(quick) == hash(Quick(quick.a, quick.b, quick.c))
        assert quick == Quick(quick.a, quick.b, quick.c)
        assert quick < Quick(quick.a + 1, "")
        assert dataclasses.replace(quick, a=5) == Quick(5, quick.b, quick.c)
        assert pickle.loads(pickle.dumps(quick)) == quick
        with pytest.raises(dataclasses.FrozenInstanceError):
            quick.a = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        Quick(1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Quick(1, "x", (), 4)  # type: ignore[call-arg]


def test_the_domain_values_keep_their_defaults() -> None:
    fact = SubscriptionFact(
        "stripe", "sub_1", None, None, "active", "active", None, (Item("p", 1, None),),
        None, False, None, None, "evt_1", Order(1, False, 0, 1),
    )  # fmt: skip
    assert (fact.healthy_us, fact.attention_us) == (None, ())


def test_only_plain_frozen_dataclasses_are_accepted() -> None:
    @dataclass
    class Mutable:
        a: int

    @dataclass(frozen=True)
    class Factory:
        a: list[int] = field(default_factory=list)

    for cls in (Mutable, Factory, int):
        with pytest.raises(TypeError):
            quick_init(cls)
