"""CloudFormation on the embedded local AWS: the synthesized stacks deployed onto moto.

:mod:`~localaws.cloudformation.deploy` creates the stacks, :mod:`~localaws.cloudformation.support`
says how each resource type exists locally, :mod:`~localaws.cloudformation.fillers` creates the
types moto skips and :mod:`~localaws.cloudformation.models` registers them with moto.
"""
