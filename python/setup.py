"""setup.py: records, in the installed package, the repository `pip install ./python` ran from, so an
installed flowvar finds that repository's build/libflowvar.so (python/flowvar/_lib.py). No compiling:
the library is the one `make` built."""

import os

from setuptools import setup
from setuptools.command.build_py import build_py

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class build_py_with_origin(build_py):
    def run(self):
        super().run()
        target = os.path.join(self.build_lib, "flowvar", "_origin.py")
        with open(target, "w") as f:
            f.write('"""The repository this copy of flowvar was installed from (written by setup.py)."""\n')
            f.write(f"REPOSITORY = {REPOSITORY!r}\n")


setup(cmdclass={"build_py": build_py_with_origin})
