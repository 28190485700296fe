"""h5guard's on-disk format, one concept per module.

* :mod:`~h5guard._format.names`: attribute names, magic values, limits (defined once);
* :mod:`~h5guard._format.tree`: the result tree, its value kinds, and turning Python
  values into stored values and back;
* :mod:`~h5guard._format.digest`: the v1 and v2 content digests (one dtype token);
* :mod:`~h5guard._format.result`: a prepared result and its journal encoding;
* :mod:`~h5guard._format.write`: the writing primitives (the hardened layout);
* :mod:`~h5guard._format.reader`: the one h5py reader (read, check, merge verification);
* :mod:`~h5guard._format.bytes`: the independent byte reader (no libhdf5);
* :mod:`~h5guard._format.checksum`: lookup3, HDF5's metadata checksum;
* :mod:`~h5guard._format.seal`: the shard seal.
"""
