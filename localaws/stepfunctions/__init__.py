"""Step Functions on the embedded local AWS: state machines execute, CloudFormation's included.

:mod:`~localaws.stepfunctions.execution` switches moto's interpreter on and lists the gaps;
:mod:`~localaws.stepfunctions.cloudformation`, :mod:`~localaws.stepfunctions.definitions` and
:mod:`~localaws.stepfunctions.result_writer` fill them.
"""
