"""Build the one compiled module, rlink._core: rlink/_core.pyx plus every csrc/*.c.

Metadata lives in pyproject.toml. Build knobs (environment variables):

  RLINK_SANITIZE=1  ASan + UBSan build (-fsanitize=address,undefined -g -O1).
                    Run it with PYTHONMALLOC=malloc LD_PRELOAD=$(gcc -print-file-name=libasan.so)
  RLINK_DEBUG=1     -g -O0 and Cython line tracing (CYTHON_TRACE), for debuggers and coverage.
  RLINK_ANNOTATE=1  write Cython's HTML annotation (rlink/_core.html).

Release builds pass -g0: without debug info the .so is about 5x smaller.
"""

import os
import sys
from glob import glob

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def _flag(name):
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


SANITIZE = _flag("RLINK_SANITIZE")
DEBUG = _flag("RLINK_DEBUG")
ANNOTATE = _flag("RLINK_ANNOTATE")
MSVC = sys.platform == "win32"

compile_args, link_args, libraries = [], [], []
define_macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
directives = {
    "language_level": 3,
    "embedsignature": True,
    "boundscheck": False,
    "wraparound": False,
    # No auto-generated __reduce_cython__/__setstate_cython__ (nodes and frames
    # hold C pointers and cannot be pickled) and no doctest __test__ dict: the
    # module's namespace is then exactly what rlink/_core.pyi describes.
    "auto_pickle": False,
    "autotestdict": False,
}

if MSVC:
    # csrc/ is C11; /std:c11 needs Visual Studio 2019 16.8+. No atomics flag:
    # rl_os.h uses Interlocked intrinsics on MSVC, not <stdatomic.h>.
    # Winsock (ws2_32) and BCryptGenRandom (bcrypt); threads need no library.
    # The RLINK_SANITIZE / RLINK_DEBUG C flags below are gcc/clang's only.
    compile_args += ["/std:c11"]
    libraries += ["ws2_32", "bcrypt"]
else:
    # Later flags win, so the knobs below override -O2 / -g0.
    compile_args += ["-std=c11", "-O2", "-pthread"]
    link_args += ["-pthread"]
    if not (SANITIZE or DEBUG):
        compile_args += ["-g0"]
    if SANITIZE:
        san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g", "-O1"]
        compile_args += san
        link_args += san
    if DEBUG:
        compile_args += ["-g", "-O0"]
if DEBUG:
    directives["linetrace"] = True
    define_macros += [("CYTHON_TRACE", "1"), ("CYTHON_TRACE_NOGIL", "1")]

ext = Extension(
    "rlink._core",
    sources=["rlink/_core.pyx", *sorted(glob("csrc/*.c"))],  # not csrc/tests/
    include_dirs=["csrc"],
    define_macros=define_macros,
    extra_compile_args=compile_args,
    extra_link_args=link_args,
    libraries=libraries,
)


class BuildExt(build_ext):
    """Cythonize (and ask numpy for its headers) only when extensions are built,
    not when setup.py merely describes them (`python -m build --sdist`)."""

    def run(self):
        import numpy
        from Cython.Build import cythonize

        for e in self.extensions:
            e.include_dirs.append(numpy.get_include())
        cythonized = cythonize(
            self.extensions,
            compiler_directives=directives,
            # "rlink" lets `cimport rl` find rlink/rl.pxd as well as `from rlink cimport rl`.
            include_path=["rlink"],
            annotate=ANNOTATE,
            # Cython skips an up-to-date _core.c; regenerate when tracing must be compiled in.
            force=DEBUG,
        )
        # Keep setuptools' own (finalized) Extension objects; take the .c sources.
        for e, c in zip(self.extensions, cythonized):
            e.sources = c.sources
        super().run()


setup(ext_modules=[ext], cmdclass={"build_ext": BuildExt})
