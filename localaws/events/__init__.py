"""EventBridge and EventBridge Scheduler on the embedded local AWS.

:mod:`~localaws.events.router` (rules deliver to Lambda, Step Functions and SNS),
:mod:`~localaws.events.inputs` (target input shaping), :mod:`~localaws.events.schedules`
(schedules and scheduled rules run) and :mod:`~localaws.events.buckets` (S3 notifications).
"""
