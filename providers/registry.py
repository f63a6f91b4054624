"""Which provider runs which action type: built-ins registered explicitly, third-party
providers through the ``conveyor.providers`` entry-point group."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from importlib.metadata import entry_points

from providers.base import ActionTypeId, Provider

ENTRY_POINT_GROUP = "conveyor.providers"


class Registry:
    def __init__(self, providers: Iterable[type[Provider]] = ()) -> None:
        self._by_key: dict[tuple[str, str, str, str], type[Provider]] = {}
        for p in providers:
            self.register(p)

    def register(self, provider: type[Provider]) -> type[Provider]:
        key = provider.action_type.key()
        if key in self._by_key and self._by_key[key] is not provider:
            raise ValueError(f"two providers registered for {provider.action_type}")
        self._by_key[key] = provider
        return provider

    def get(self, action_type: ActionTypeId) -> type[Provider] | None:
        return self._by_key.get(action_type.key())

    def __iter__(self) -> Iterator[type[Provider]]:
        return iter(self._by_key.values())

    def extended(self, providers: Iterable[type[Provider]]) -> Registry:
        """This registry plus ``providers`` (job-worker action types declared at run time);
        a type a built-in already runs keeps its built-in."""
        out = Registry(self)
        for p in providers:
            if out.get(p.action_type) is None:
                out.register(p)
        return out

    def load_entry_points(self) -> None:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            self.register(ep.load())
