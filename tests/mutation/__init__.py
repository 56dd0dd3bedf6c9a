"""Mutation testing of the money core: `python -m tests.mutation` (see runner.py and README).

Not part of the pytest run: no file here is named test_*.py.
"""
