"""Doctest set-up shared by every module: a ``tmp_path`` for examples that write files."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _doctest_tmp_path(doctest_namespace: dict, tmp_path) -> None:
    doctest_namespace["tmp_path"] = tmp_path


# Loopback HTTP / S3 / GCS servers for the cloud tests (imported first so the gcsfs
# environment switch is set before anything imports gcsfs).
pytest_plugins = ["tests.loopback"]
