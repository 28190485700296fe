from __future__ import annotations

import sys

import pytest

from optimizer.cli import main


def test_engine_dask_without_distributed_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: object
) -> None:
    # A None entry makes "import distributed" raise ImportError, as when it is absent.
    monkeypatch.setitem(sys.modules, "distributed", None)
    monkeypatch.delitem(sys.modules, "optimizer.dask_engine", raising=False)
    code = main(["run", "--engine", "dask", "-o", f"{tmp_path}/out.h5", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1
    assert "--engine dask needs Dask distributed" in err[0]
    assert 'pip install ".[dask]"' in err[0]
