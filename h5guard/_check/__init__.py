"""``h5guard check`` by its layers (docs/check.md).

* :mod:`~h5guard._check.api`: :func:`~h5guard.check`, :func:`~h5guard.validate`,
  :func:`~h5guard.validate_many`: the layers put together into a report;
* :mod:`~h5guard._check.quick`: the quick layer (signature, superblock, end of file,
  open-for-write flags), pure Python;
* :mod:`~h5guard._check.deep`: the deep layer's entry, run in the sandbox child;
* :mod:`~h5guard._check.inspector`: the state of one deep inspection, the verdict on
  each group;
* :mod:`~h5guard._check.own`: h5guard's own files (seal, digests, the byte reader);
* :mod:`~h5guard._check.foreign`: other libraries' files (one walk over every object);
* :mod:`~h5guard._check.child`: the sandbox child's main loop.

Schema rules are applied in one place, :meth:`h5guard.Schema.check_group`, on the
description every reader gives of a group.
"""
