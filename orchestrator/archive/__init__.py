"""Where finished workflows go when their retention in Redis ends, and where they are still found.

`Archive` is the interface (open to other sinks: an object store, a warehouse); `DirectoryArchive`
the default: one gzip file of JSON lines per hour and per writing node, in a directory every
node can read. The leader's clocks move workflows there (`cluster.retention`); the API falls
back to it when a workflow is no longer in the store.
"""

from .directory import DirectoryArchive
from .protocol import Archive, ArchivedPage

__all__ = ["Archive", "ArchivedPage", "DirectoryArchive"]
