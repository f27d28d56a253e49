"""Compiled kernels built from ``src_ext/`` (see ``setup.py``).

Nothing here validates input; use the public functions in ``slamlearn``.
"""
