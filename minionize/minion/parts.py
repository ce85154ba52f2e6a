"""What the parts of a minion's loop share (:mod:`.workers`, :mod:`.monitor`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from ..callbacks.base import Callback
    from ..engines.base import Engine
    from ..reporters.base import Reporter


class MinionPart:
    """A part of one minion: it acts on the minion's queue (``engine``), its
    ``callback`` and its ``reporter`` (None when nobody listens), the same three for
    every part, given by :class:`minionize.minion.run.Minion`."""

    def __init__(self, *, engine: Engine, callback: Callback, reporter: Optional[Reporter]) -> None:
        self.engine = engine
        self.callback = callback
        self.reporter = reporter
