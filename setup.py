"""Build the native kernels in ``src_ext/`` into ``slamlearn._ext``.

The kernels use typed memoryviews only (no NumPy C-API), so building needs
Cython and a C compiler, nothing else. The extension is required: there is no
pure-Python fallback, so a broken build fails loudly at install time.
"""

import sys

from Cython.Build import cythonize
from setuptools import Extension, setup

KERNELS = ["_pav", "_steps", "_rows", "_loss"]

compile_args = [] if sys.platform == "win32" else ["-O3"]

extensions = [
    Extension(
        f"slamlearn._ext.{name}",
        sources=[f"src_ext/{name}.pyx"],
        extra_compile_args=compile_args,
    )
    for name in KERNELS
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )
)
