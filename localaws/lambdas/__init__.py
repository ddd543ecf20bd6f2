"""Lambda on the embedded local AWS: functions run in warm worker processes, as Lambda runs them.

:mod:`~localaws.lambdas.runtime` (the runtime and moto's invoke patch),
:mod:`~localaws.lambdas.environment` (worker pool and execution environments),
:mod:`~localaws.lambdas.worker` (the worker process), :mod:`~localaws.lambdas.extensions_api`,
:mod:`~localaws.lambdas.telemetry` (logs and EMF metrics), :mod:`~localaws.lambdas.routing`
(versions and aliases) and :mod:`~localaws.lambdas.spec` (what a worker runs).
"""
