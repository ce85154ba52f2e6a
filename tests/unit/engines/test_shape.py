"""The queue-service engines read alike: keyword-only constructors, the kit's optional
import (with its ``pip install 'minionize[x]'`` hint), and administration apart from the
worker's verbs."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest

from minionize.engines import Engine, engine_class
from minionize.engines.kit import ClientCalls

SERVICES = ("redis", "pubsub", "pulsar")


@pytest.mark.parametrize("name", SERVICES)
def test_constructors_are_keyword_only(name: str) -> None:
    cls = engine_class(name)
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    assert params and all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params), params


@pytest.mark.parametrize("name", SERVICES)
def test_administration_lives_apart_from_the_worker_verbs(name: str) -> None:
    cls = engine_class(name)
    admin = importlib.import_module(f"minionize.engines.{name}.admin")
    for verb in ("fill", "list", "requeue_dead", "status"):
        assert getattr(cls, verb).__module__ == admin.__name__, verb
    for verb in ("take", "ack", "retry", "release", "dead_letter"):
        assert getattr(cls, verb).__module__ == cls.__module__, verb


@pytest.mark.parametrize("name", SERVICES)
def test_every_engine_uses_the_kit(name: str) -> None:
    cls = engine_class(name)
    assert issubclass(cls, ClientCalls) and issubclass(cls, Engine)
    folder = Path(inspect.getfile(cls)).parent
    family = "".join(p.read_text() for p in sorted(folder.glob("*.py")))
    assert "optional_import(" in family  # the pip install 'minionize[x]' hint
    assert f"import {name}\n" not in family and f"from {name} import" not in family
