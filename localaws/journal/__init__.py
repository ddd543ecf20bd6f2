"""The local stage's write-ahead journal: nothing the local AWS acknowledged is lost to a crash.

- :mod:`localaws.journal.log`: the file format, appends and group-committed fsync;
- :mod:`localaws.journal.capture`: which requests and in-server writes are journaled (moto patches);
- :mod:`localaws.journal.replay`: applying records to a fresh stage;
- :mod:`localaws.journal.snapshot`: what a clean ``down`` compacts the journal into;
- :mod:`localaws.journal.names`: the same physical names on every ``up``.

:mod:`localaws.persistence` puts them together for :class:`localaws.LocalAws`.
"""
