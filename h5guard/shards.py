"""TEMPORARY, removed at integration: the old home of the writer and of journal recovery.

Only for the modules of the FORMAT move that still import from here in this branch
(``validate.journal_finding`` imports ``read_journal``; ``_salvage_child`` imports
``SHARD_SUFFIX`` and ``ShardWriter``). Their new homes are :mod:`h5guard._journal`,
:mod:`h5guard._shard` and :mod:`h5guard._writer` (see lifecycle-moves.txt).
"""

from __future__ import annotations

from h5guard._journal import read_journal
from h5guard._shard import SHARD_SUFFIX
from h5guard._writer import ShardWriter

__all__ = ["SHARD_SUFFIX", "ShardWriter", "read_journal"]
