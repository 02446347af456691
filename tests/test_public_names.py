"""The public names of each package: what users meet (``Zoo.layout()`` returns a ``Layout``) is importable from the
package, every listed name resolves, and nothing private is listed."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize("package", ["zoo", "builders", "loaders", "tasks"])
def test_every_public_name_resolves_and_dir_lists_only_them(package):
    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, name
    assert not {"TYPE_CHECKING", "annotations"} & set(dir(module))


def test_the_types_a_zoo_hands_out_are_exported():
    import zoo

    assert {"Layout", "SymmetrySpec", "UnknownNameError", "UntrustedCodeError", "StoreError"} <= set(zoo.__all__)
    from zoo.layout import Layout
    from zoo.symmetry import SymmetrySpec

    assert zoo.Layout is Layout and zoo.SymmetrySpec is SymmetrySpec
