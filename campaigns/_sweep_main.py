"""``layout-sweep`` with one observation point: which configs each worker finished.

    python -m campaigns._sweep_main run SPEC -o OUT ...   (the layout-sweep CLI, unchanged)

With ``CAMPAIGN_COMPLETIONS=FILE`` set, the local engine's batch target is swapped for
:func:`run_batch` here, which calls ``optimizer._worker.run_batch`` unchanged but first
wraps its per-config optimization so that each finished optimization appends its
config id to FILE (one ``O_APPEND`` write, so concurrent workers never interleave).
A config id that appears twice was optimized twice: that is how the crash campaign
counts recomputed configs, including work lost with an uncommitted batch.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

ENV = "CAMPAIGN_COMPLETIONS"


def run_batch(
    temp_dir: str, configs: Sequence[Mapping[str, Any]], attempts: Mapping[str, int]
) -> Any:
    from optimizer import _worker

    log_path = os.environ.get(ENV)
    if log_path and not getattr(_worker, "_campaign_wrapped", False):
        original = _worker._optimize

        def observed(config: Any) -> Any:
            out = original(config)
            fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                os.write(fd, f"{config.config_id}\n".encode())
            finally:
                os.close(fd)
            return out

        _worker._optimize = observed
        _worker._campaign_wrapped = True  # type: ignore[attr-defined]
    return _worker.run_batch(temp_dir, configs, attempts)


def main() -> int:
    from optimizer import cli, engines

    if os.environ.get(ENV):
        engines.BATCH_TARGET = "campaigns._sweep_main:run_batch"
    return cli.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
