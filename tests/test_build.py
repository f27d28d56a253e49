"""The compiled kernels are required and are the ones in use."""

import importlib.machinery

import slamlearn.isotonic
import slamlearn.margins
from slamlearn._ext import _pav, _rows, _steps


def test_kernels_are_compiled_extensions():
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    for mod in (_pav, _rows, _steps):
        assert mod.__file__.endswith(suffixes), mod.__file__


def test_public_functions_use_native_kernels():
    # No pure-Python fallback: the array functions call the compiled modules.
    assert slamlearn.isotonic._pav is _pav
    assert slamlearn.isotonic._steps is _steps
    assert slamlearn.margins._rows is _rows
