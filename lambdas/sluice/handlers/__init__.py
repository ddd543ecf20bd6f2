"""Lambda entry points: thin handlers over the runtime package, one module per function."""
