"""Which libflowvar.so the package loads: $FLOWVAR_LIB when set (and nothing else: a wrong path is an
ImportError naming it), else the build/ of the repository the package comes from."""

import os
import subprocess
import sys

from conftest import PYTHON_DIR, REPO


def import_in_subprocess(**env):
    env = {**{k: v for k, v in os.environ.items() if k != "FLOWVAR_LIB"}, **env, "PYTHONPATH": PYTHON_DIR}
    return subprocess.run([sys.executable, "-c", "import flowvar; print(flowvar.library_path)"], capture_output=True,
                          text=True, env=env, cwd="/")


def test_default_is_the_source_trees_build():
    r = import_in_subprocess()
    assert r.returncode == 0, f"import flowvar: {r.stderr}"
    assert os.path.realpath(r.stdout.strip()) == os.path.realpath(os.path.join(REPO, "build", "libflowvar.so")), \
        "the repository's build/libflowvar.so"


def test_flowvar_lib_is_used_when_set():
    lib = os.path.realpath(os.path.join(REPO, "build", "libflowvar.so"))
    r = import_in_subprocess(FLOWVAR_LIB=lib)
    assert r.returncode == 0 and r.stdout.strip() == lib, "$FLOWVAR_LIB's path"


def test_missing_flowvar_lib_is_an_import_error_naming_it():
    r = import_in_subprocess(FLOWVAR_LIB="/nonexistent/libflowvar.so")
    assert r.returncode != 0, "no fallback past a wrong $FLOWVAR_LIB"
    assert "ImportError" in r.stderr and "/nonexistent/libflowvar.so ($FLOWVAR_LIB)" in r.stderr, \
        "the error names the path and where it came from"
