"""The queue-service engines read alike: keyword-only constructors, the kit's optional
import (with its ``pip install 'minionize[x]'`` hint), and each engine holding its
client and an administration over it, never inheriting them."""

from __future__ import annotations

import importlib
import inspect
import typing
from pathlib import Path

import pytest

from minionize.engines import Engine, engine_class
from minionize.engines.base import Admin
from minionize.engines.file.admin import FileAdmin
from minionize.engines.file.engine import FileEngine

SERVICES = ("redis", "pubsub", "pulsar")
ADMIN_VERBS = ("fill", "list", "requeue_dead", "status")
WORKER_VERBS = ("take", "ack", "retry", "release", "dead_letter")


@pytest.mark.parametrize("name", SERVICES)
def test_constructors_are_keyword_only(name: str) -> None:
    cls = engine_class(name)
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    assert params and all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params), params


@pytest.mark.parametrize("name", SERVICES)
def test_the_engine_holds_its_client_and_its_administration(name: str) -> None:
    cls = engine_class(name)
    held = typing.get_type_hints(cls)
    client, admin = held["client"], held["admin"]
    assert client.__module__ == f"minionize.engines.{name}.client"
    assert admin.__module__ == f"minionize.engines.{name}.admin"
    # Composition: the engine inherits the Engine protocol only; client and admin
    # inherit nothing; the admin works over the same client.
    assert [c for c in cls.__mro__ if c.__module__.startswith("minionize.")] == [cls, Engine]
    assert client.__bases__ == (object,) and admin.__bases__ == (Admin,)
    assert typing.get_type_hints(admin.__init__)["client"] is client


@pytest.mark.parametrize("name", SERVICES)
def test_administration_lives_in_the_admin_and_the_engine_hands_it_over(name: str) -> None:
    cls = engine_class(name)
    admin = typing.get_type_hints(cls)["admin"]
    for verb in ADMIN_VERBS:
        assert getattr(admin, verb).__module__ == f"minionize.engines.{name}.admin", verb
    assert "administration" in vars(cls)  # the engine hands its verbs to its admin
    for verb in WORKER_VERBS:
        assert getattr(cls, verb).__module__ == cls.__module__, verb
        assert not hasattr(admin, verb), verb


def test_the_file_engine_hands_its_administration_to_its_admin() -> None:
    assert [c for c in FileEngine.__mro__ if c.__module__.startswith("minionize.")] == [
        FileEngine, Engine]
    for verb in ("list", "requeue_dead", "status", "results"):
        assert getattr(FileAdmin, verb).__module__ == FileAdmin.__module__, verb
    assert typing.get_type_hints(FileEngine.administration)["return"] is FileAdmin


@pytest.mark.parametrize("name", SERVICES)
def test_every_engine_uses_the_kit(name: str) -> None:
    cls = engine_class(name)
    folder = Path(inspect.getfile(cls)).parent
    family = "".join(p.read_text() for p in sorted(folder.glob("*.py")))
    assert "optional_import(" in family  # the pip install 'minionize[x]' hint
    assert f"import {name}\n" not in family and f"from {name} import" not in family
    client = importlib.import_module(f"minionize.engines.{name}.client")
    assert "Calls(self.errors" in inspect.getsource(client)  # one translation, one outage policy


def test_an_engine_counts_its_params_where_it_or_its_admin_can() -> None:
    """``--progress`` shows a total only for an engine whose status counts."""
    from minionize.engines.sweep import SweepEngine
    from minionize.testing import MemoryEngine

    class Bare(MemoryEngine):
        status = Engine.status  # type: ignore[assignment]

    assert SweepEngine("unused").counts_params()  # through its admin
    assert FileEngine("unused").counts_params()
    assert MemoryEngine([]).counts_params()  # its own status
    assert not Bare([]).counts_params()
