"""Mutation testing: the historical bug corpus and mechanical mutants of impl, with explained survivors."""
