"""The recipe and its runner: config bases, the recipe schema, the step registry, the run context, the runner."""
