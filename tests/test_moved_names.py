"""Names that moved keep working, with a warning that says where they went."""

from __future__ import annotations

import importlib
import sys

import pytest


def test_making_names_still_import_from_ttrl_data_with_a_warning():
    import ttrl.data
    import ttrl.making

    with pytest.warns(DeprecationWarning, match=r"moved to ttrl\.making"):
        assert ttrl.data.collect_dataset is ttrl.making.collect_dataset
    with pytest.raises(AttributeError):
        ttrl.data.no_such_name  # noqa: B018


@pytest.mark.parametrize("module", ["collect", "recipes", "behavior"])
def test_moved_modules_still_import_with_a_warning(module):
    sys.modules.pop(f"ttrl.data.{module}", None)
    with pytest.warns(DeprecationWarning, match=rf"ttrl\.data\.{module} moved to ttrl\.making"):
        old = importlib.import_module(f"ttrl.data.{module}")
    new = importlib.import_module(f"ttrl.making.{module}")
    public = [n for n in dir(new) if not n.startswith("_") and callable(getattr(new, n))]
    assert public and all(getattr(old, n) is getattr(new, n) for n in public if hasattr(old, n))
