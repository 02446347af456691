"""zoo/text.py: the one spelling of sizes and epoch lists that zoo status, zoo info and zoo report print."""

from __future__ import annotations

import pytest

from zoo.text import byte_size, epochs_text


@pytest.mark.parametrize("n,text", [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KB"), (3 * 1024**3, "3.0 GB"),
                                    (5 * 1024**5, "5120.0 TB")])
def test_byte_size(n, text):
    assert byte_size(n) == text


@pytest.mark.parametrize("epochs,text", [([], ""), ([0, 1, 2], "0, 1, 2"), ([0, 1, 2, 3], "0..3"),
                                         ((5, 6, 7, 8, 9), "5..9"), ([0, 2, 4, 6], "0, 2, 4, 6")])
def test_epochs_text(epochs, text):
    assert epochs_text(epochs) == text
