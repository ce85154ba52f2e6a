"""What ``minion-queue`` prints of a queue: its counters (``status``), its params
(``list``) and what their tasks returned (``results``), as text or JSON lines."""

from __future__ import annotations

import argparse
import itertools
import json
from typing import Any

STATUS_LABELS = (
    ("todo", "todo"),
    ("in_flight", "in flight"),
    ("expired", "expired leases"),
    ("done", "done"),
    ("dead", "dead letters"),
    ("total", "total"),
)


def show_status(engine: Any, args: argparse.Namespace) -> int:
    counters = dict(engine.status())
    if args.json:
        print(json.dumps(counters, sort_keys=True))
        return 0
    print(engine.describe())
    labels = dict(STATUS_LABELS)
    keys = [key for key, _ in STATUS_LABELS if key in counters]
    keys += sorted(key for key in counters if key not in labels)
    width = max((len(labels.get(key, key)) for key in keys), default=0)
    for key in keys:
        print(f"  {labels.get(key, key):<{width}}  {counters[key]}")
    holders = getattr(engine, "holders", None)
    if holders is not None and (counters.get("in_flight") or counters.get("expired")):
        for line in holders():  # who holds them, and when they come back at the latest
            print(f"  {line}")
    return 0


def show_list(engine: Any, args: argparse.Namespace) -> int:
    records = engine.list(args.kind)
    if args.limit is not None:
        records = itertools.islice(records, max(0, args.limit))
    for record in records:
        if args.json:
            print(json.dumps(record, sort_keys=True))
            continue
        param = json.dumps(record.get("param"), ensure_ascii=False)
        line = f"{record.get('id', '')}  {param}"
        if record.get("attempts"):
            line += f"  attempts={record['attempts']}"
        if args.kind == "dead":
            line += f"  {record.get('reason', '')}"
        if args.kind == "in-flight" and "lease_end" in record:
            line += f"  {engine.held_text(record)}"
        print(line)
    return 0


def show_results(engine: Any, args: argparse.Namespace) -> int:
    rows = engine.results()
    if args.limit is not None:
        rows = itertools.islice(rows, max(0, args.limit))
    for row in rows:
        if args.json:
            print(json.dumps(row, sort_keys=True))
        else:
            print(f"{shown(row['param'])}\t{shown(row['result'])}")
    return 0


def shown(value: Any) -> str:
    """A value as JSON text for the listing: non-ASCII characters as they are, but a
    lone surrogate (not Unicode text: no terminal can print it) escaped."""
    text = json.dumps(value, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value)
    return text
