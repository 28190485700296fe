"""The locked, crash-safe, idempotent merge of committed shards into one output.

In the order of its steps: :mod:`.plan` (what to merge: a :class:`~.plan.MergePlan`),
:mod:`.output` (the output file, its record, the partial, quarantine), :mod:`.verify`
(the new output's digests, before the rename), :mod:`.run` (:func:`~.run.merge`) and
:mod:`.compact` (:func:`~.compact.compact`, a segmented output made one file again).

Protocol (each step leaves something valid on disk if the process dies there):

1. take ``OUTPUT.lock`` (waits up to ``lock_timeout``; never deletes the lock file);
2. validate every committed shard: one whose seal matches its bytes is exactly what an
   h5guard writer committed and is planned from its index; any other is read fully in
   the sandbox (quick + deep + digests + schema). Look the shards' keys up in the
   existing output; move bad shards to ``quarantine/`` with a JSON note;
3. check the free space for the new output before writing anything;
4. build ``OUTPUT.partial``: a byte copy of the old output plus the new groups;
   a key already present with the same digest is a duplicate, with another digest
   a conflict (the output keeps its version). A segmented output (from 64 MiB on, or
   ``layout="segmented"``; :mod:`h5guard._format.segments`) gets a new segment file
   in ``OUTPUT.segments/`` instead, and ``OUTPUT.partial`` is the new index: a copy of
   the old one plus a link per new key;
5. recompute the digest of every added group from the bytes of the partial file
   (h5guard's own reader, libhdf5 for what it does not know) and match it;
6. fsync it, ``os.replace`` it over the output, fsync the directory;
7. only now delete (or keep) the merged shards and quarantine conflicting ones.

Re-running after a crash at any step gives the same output as one clean run: shards
are deleted only after step 6, and their groups then count as duplicates.
"""
