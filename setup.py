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

# Selects on floats (clamps, maxima) compile to branches unless the compiler
# may ignore floating-point traps, and row sums vectorize only when it may
# reorder them. -fno-trapping-math allows the first (the kernels never rely on
# traps); the loss kernel also allows reordering its sums. Unlike -ffast-math
# these keep NaN/inf semantics and do not touch the process's FP modes.
NO_TRAPS = [] if sys.platform == "win32" else ["-fno-trapping-math"]
REORDER_SUMS = [] if sys.platform == "win32" else ["-fno-signed-zeros", "-fassociative-math"]
EXTRA_ARGS = {"_steps": NO_TRAPS, "_loss": NO_TRAPS + REORDER_SUMS}

extensions = [
    Extension(
        f"slamlearn._ext.{name}",
        sources=[f"src_ext/{name}.pyx"],
        include_dirs=["src_ext"],
        extra_compile_args=compile_args + EXTRA_ARGS.get(name, []),
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
