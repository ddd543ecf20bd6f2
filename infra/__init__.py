"""CDK side of Sluice: stage settings, stacks and constructs. No business logic lives here."""
