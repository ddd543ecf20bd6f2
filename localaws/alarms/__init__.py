"""CloudWatch alarms on the embedded local AWS: evaluated, with state-change events and actions.

:mod:`~localaws.alarms.evaluator` runs the evaluation; :mod:`~localaws.alarms.rules` holds
CloudWatch's decisions and messages as pure functions.
"""
