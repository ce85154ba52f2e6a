"""The redis engine's Lua scripts are package data files, read through importlib.resources."""

from __future__ import annotations

import re
from pathlib import Path

from minionize.engines.redis.lua import lua

ENGINE_DIR = Path(__file__).resolve().parents[4] / "minionize" / "engines" / "redis"


def test_every_script_the_engine_names_is_a_file_with_its_contract_on_top() -> None:
    named = set()
    for module in ENGINE_DIR.glob("*.py"):
        named |= set(re.findall(r"\b(?:lua|script)\(\"(\w+)\"\)", module.read_text()))
    assert named >= {"settle", "fill", "claim", "extend", "requeue_dead", "reset_expired", "forget",
                     "results"}
    for name in named:
        text = lua(name)
        assert text.startswith("-- KEYS:"), name  # what it takes and returns, said first
        assert "redis.call(" in text
