"""The search behind `slimformer compress`: shapes and steps for a user's budget, and the Pareto front (issue 27)."""
