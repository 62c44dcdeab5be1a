"""The test extra (CPU torch and transformers) is part of the suite: tests that compare against the reference fail,
never skip silently, when it is missing."""
from __future__ import annotations

import pytest


def require(module: str) -> None:
    """Fails the collection of `module` with one clear line when torch or transformers cannot be imported."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        pytest.fail(f"{module} needs torch and transformers (the test extra): pip install -e '.[test]' ({e})",
                    pytrace=False)
