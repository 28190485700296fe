"""Every name, magic value and limit of h5guard's on-disk format, defined once.

Pure Python (no numpy, no h5py): the quick layer and the independent byte reader
import it too. docs/format.md describes what each one means on disk.
"""

from __future__ import annotations

# -- attributes h5guard writes ----------------------------------------------------------
RESERVED_PREFIX = "h5guard_"  # no user name may start with it
DIGEST_ATTR = "h5guard_digest"  # every result group: its content digest
INDEX_ATTR = "h5guard_index"  # JSON {key: digest} of a shard's groups, written at commit
FORMAT_ATTR = "h5guard_format"  # the root group: which kind of h5guard file this is
SCHEMA_ATTR = "h5guard_schema"  # the root group: the schema the writer checked against
VERSION_ATTR = "h5guard_version"  # the root group: the h5guard version that wrote it
KINDS_ATTR = "h5guard_kinds"  # JSON {name: kind} of values whose kind the type does not imply

# -- file kinds (values of FORMAT_ATTR) -------------------------------------------------
SHARD_FORMAT = "h5guard-shard/1"
OUTPUT_FORMAT = "h5guard-output/1"
SEGMENT_DIR_SUFFIX = ".segments"  # a segmented output OUT keeps its segments in OUT.segments/

# -- digests ----------------------------------------------------------------------------
DIGEST_PREFIX = "sha256:"  # v1: flat groups (files written before result trees)
DIGEST_V2_PREFIX = "sha256-v2:"  # v2: result trees
DIGEST_V1_MAGIC = b"h5guard-digest-v1\0"
DIGEST_V2_MAGIC = b"h5guard-digest-v2\0"

# -- HDF5 -------------------------------------------------------------------------------
SIGNATURE = b"\x89HDF\r\n\x1a\n"
UNDEFINED = 0xFFFF_FFFF_FFFF_FFFF  # HDF5's undefined address
LIBVER = ("v110", "latest")  # every piece of metadata carries a checksum
COMPACT_LIMIT = 32 * 1024  # datasets up to this many bytes live in their object header
# The most libhdf5 types (and dataspaces) h5guard keeps made for reuse. Few: every
# libhdf5 ID alive in the process makes each file close slower (libhdf5 looks through
# them for the file's open objects): 1,000 live types cost 0.5 ms a close, measured on
# the shared 2-core machine, ten times a small close.
MAX_CACHED_IDS = 32

# -- limits -----------------------------------------------------------------------------
# Read big datasets this many bytes at a time so neither digesting nor checking ever
# holds them whole.
READ_BLOCK = 16 * 1024 * 1024
# A result is meant to be small enough to read whole (docs/format.md, docs/reading.md):
# these keep a mistake (a loop that nests forever, a million attributes) from producing
# a file nothing can open in reasonable time.
MAX_DEPTH = 32  # nested groups below the result's own group
MAX_OBJECTS = 10_000  # groups + datasets + attributes in one result
MAX_NAME_BYTES = 1024  # UTF-8 bytes of one member or attribute name
MAX_ATTR_BYTES = 1024 * 1024  # one attribute's value; bigger values belong in a dataset

# -- value kinds ------------------------------------------------------------------------
# The Python scalar kinds and the numpy dtype (``dtype.str``) each is stored as.
PY_SCALAR_KINDS = {"int": "<i8", "float": "<f8", "bool": "|b1", "complex": "<c16"}
