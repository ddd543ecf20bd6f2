"""The Sluice demo: the seed's lifecycle end to end on the embedded local AWS (:mod:`localaws`).

- :mod:`sluice_demo.datasets`: the generated credit data, with controllable drift;
- :mod:`sluice_demo.lifecycle`: the eight lifecycle steps, against a running stage;
- :mod:`sluice_demo.cli`: the ``sluice demo`` command (a ``sluice.cli`` entry point).

Nothing in ``lambdas/sluice`` imports this package.
"""
