"""The engines, apart from the areas that use them: z3 over impl's own code, CrossHair, delta debugging."""
