"""GNU parallel's habits for a minion: a joblog, a results directory, grouped output,
the order of takes and a progress bar (:mod:`.habits` wires them from the flags)."""
