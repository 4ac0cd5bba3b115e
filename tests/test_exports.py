"""Package exports: one meaning per name (``scratchdet.nms`` is the module, never the function)."""

import importlib
import subprocess
import sys

import pytest

import scratchdet

# In a fresh interpreter (a lazy export resolves differently once its namesake module is
# imported): every exported name that is also a submodule's must be that module.
CHECK = """
import importlib, pkgutil, sys
package = importlib.import_module(sys.argv[1])
submodules = {m.name for m in pkgutil.iter_modules(package.__path__)}
clashes = sorted(set(package.__all__) & submodules)
print([n for n in clashes if getattr(package, n) is not importlib.import_module(f"{package.__name__}.{n}")])
"""


@pytest.mark.parametrize("package", ["scratchdet", "scratchdet.data", "scratchdet.study"])
def test_an_export_named_like_a_submodule_is_that_module(package):
    result = subprocess.run([sys.executable, "-c", CHECK, package], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("package", ["scratchdet", "scratchdet.data", "scratchdet.study"])
def test_every_export_resolves(package):
    package = importlib.import_module(package)
    assert all(getattr(package, name) is not None for name in package.__all__)


def test_nms_is_the_module_and_its_function_is_one_import_away():
    from scratchdet import batched_nms, nms

    from scratchdet.nms import nms as nms_function

    assert nms is importlib.import_module("scratchdet.nms") and scratchdet.nms is nms
    assert nms.nms is nms_function and callable(batched_nms)
    assert "nms" not in scratchdet.__all__ and "TrainSettings" not in scratchdet.__all__
