"""Step 5 of the merge: the digest of every added group, recomputed from the bytes of
the new output, must match before the new output replaces the old one.

The check's own-file verification (:func:`h5guard._check.own.verify_copied`) does it:
the independent byte reader parses the copied objects straight from the file, apart
from the libhdf5 that wrote them, and groups outside the layout it parses are read back
through the streaming reader. The new file is one this process just wrote, so it is
read in-process.

A big verification is shared with one sandbox child (:class:`h5guard.Sandbox`, the one
child-process protocol of h5guard): the child verifies half of the groups while this
process verifies the other half. The child is started before the copy is written
(:func:`helper`), so its interpreter start-up overlaps the copy instead of delaying the
verification. Any failure of the child (a crash, its time or memory limit) means this
process verifies that half too: a verification never depends on the helper.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor

from h5guard import _sandbox
from h5guard._check.own import verify_copied
from h5guard.report import Finding

log = logging.getLogger(__name__)

# Below this many added groups a helper costs more than the half it verifies. A sandbox
# child is a new interpreter (about 0.5 s of CPU to import numpy, h5py and the reader);
# the forked helper this replaced cost almost nothing and paid from 2000 groups. Measured
# on the shared 2-core machine, 3,000 and 10,000 added groups: the spawned helper was
# 0.6 s slower than verifying here, while the forked one had been even with it.
PARALLEL_VERIFY_MIN = 20000
# What the helper runs on its half; tests rebind it to slow the helper down or kill it.
HELPER_TARGET = "h5guard._check.own:verify_copied"

Added = Mapping[str, tuple[int, str]]  # key -> (object header address, digest)


@contextlib.contextmanager
def helper(groups: int, *, timeout: float, memory_limit: int) -> Iterator[_sandbox.Sandbox | None]:
    """A sandbox with one child starting up, when ``groups`` are enough to share.

    Parameters
    ----------
    groups : int
        How many groups the merge will add.
    timeout : float
        Seconds the helper's half may take.
    memory_limit : int
        Bytes of address space the child may add (the reader maps the whole new output).

    Yields
    ------
    Sandbox or None
        The helper's sandbox, or None below :data:`PARALLEL_VERIFY_MIN` groups.
    """
    if groups < PARALLEL_VERIFY_MIN:
        yield None
        return
    with _sandbox.Sandbox(workers=1, timeout=timeout, memory_limit=memory_limit) as box:
        with contextlib.suppress(Exception):  # no child now: the call starts one
            box.start(1)
        yield box


def verify_copy(partial: str, added: Added, *, helper: _sandbox.Sandbox | None) -> list[Finding]:
    """Recompute the digest of every added group from the bytes of the new output.

    Parameters
    ----------
    partial : str
        The new output, closed.
    added : mapping of str to (int, str)
        Each added group's object header address and expected digest.
    helper : Sandbox or None
        A sandbox (from :func:`helper`) to verify half of the groups in, or None.

    Returns
    -------
    list of Finding
        An error for each group whose bytes do not give its digest (empty when
        everything verifies).
    """
    if not added:
        return []
    if helper is None or len(added) < PARALLEL_VERIFY_MIN:
        return verify_copied(partial, added)
    # This process's half runs in a thread while this thread waits for the helper's
    # answer (the sandbox's calls are made from the thread that started its children).
    keys = list(added)
    mine = {k: added[k] for k in keys[: len(keys) // 2]}
    theirs = {k: added[k] for k in keys[len(keys) // 2 :]}
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="h5guard-verify") as pool:
        own = pool.submit(verify_copied, partial, mine)
        try:
            answer = helper.call(HELPER_TARGET, partial, theirs)
        except Exception as err:  # the helper could not even start
            answer = _sandbox.SandboxResult(failure="error", detail=str(err))
        problems = own.result()
    if answer.ok:
        return problems + list(answer.value)
    log.info("verification helper failed (%s); verifying its half here", answer.detail)
    return problems + verify_copied(partial, theirs)
