"""``layout-sweep report`` / ``show``: a real (tiny) sweep, reported as HTML and PNGs."""

from __future__ import annotations

import argparse
import dataclasses
import html
import json
import re
import shutil
import struct
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import h5py
import pytest

pytest.importorskip("matplotlib")

import h5guard
import optimizer
from optimizer import _report_cli
from optimizer._report import html as report_html
from optimizer.config import expand_spec
from optimizer.report import (
    MissingExtraError,
    UnknownConfigError,
    default_report_dir,
    read_sweep,
    write_layout_plot,
    write_report,
)
from optimizer.results import RESULT_SCHEMA, failure_group, failure_key
from optimizer.summary import NotASweepOutputError, SiteStats, iter_records, summarize

SPEC: dict[str, Any] = {
    "sweep": [
        {
            "site": "iea37",
            "n_turbines": 16,
            "grid_size": [4, 5],
            "random_pct": [25],
            "seeds": [0, 1],
        },
        {"site": "hornsrev1", "n_turbines": 16, "grid_size": [4], "random_pct": [0], "seeds": [0]},
    ],
    "optimizer": {"maxiter": 15, "tol": 1e-6},
}
SITES = ("iea37-16", "hornsrev1-16")
NASTY_ERROR = '<script>alert("x")</script> & ValueError: boom'


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sweep") / "layouts.h5"
    with optimizer.LocalEngine(workers=2) as engine:
        result = optimizer.run_sweep(SPEC, output=str(out), engine=engine)
    assert result.exit_code == 0
    return out


@pytest.fixture(scope="module")
def with_failure(sweep: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A copy of the sweep whose spec grew by two configs: one failed, one pending."""
    root = tmp_path_factory.mktemp("failed")
    spec = json.loads(json.dumps(SPEC))
    spec["sweep"][0]["seeds"] = [0, 1, 2]
    done = {c.config_id for c in expand_spec(SPEC)}
    new = [c for c in expand_spec(spec) if c.config_id not in done]
    assert len(new) == 2
    shards = root / "shards"
    shards.mkdir()
    with h5guard.ShardWriter(shards, schema=RESULT_SCHEMA) as writer:
        datasets, attrs = failure_group(
            new[0],
            error=NASTY_ERROR,
            traceback="Traceback (most recent call last):\nValueError: <boom>",
            attempt=1,
            kind="exception",
        )
        writer.add(failure_key(new[0].config_id, 1), datasets, attrs)
    out = root / "layouts.h5"
    shutil.copy(sweep, out)
    report = h5guard.merge(
        shards,
        out,
        schema=RESULT_SCHEMA,
        root_attrs={"sweep_spec": json.dumps(spec, sort_keys=True)},
    )
    assert report.exit_code == 0
    return out, new[0].config_id


@pytest.fixture(scope="module")
def empty_output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("empty")
    (root / "shards").mkdir()
    out = root / "layouts.h5"
    h5guard.merge(root / "shards", out, root_attrs={"sweep_spec": json.dumps(SPEC, sort_keys=True)})
    return out


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert head[12:16] == b"IHDR"
    width, height = struct.unpack(">II", head[16:24])
    return int(width), int(height)


def local_links(index: Path) -> list[str]:
    page = index.read_text(encoding="utf-8")
    refs = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert not any(re.match(r"[a-z]+:", r) for r in refs), "the page must not fetch anything"
    assert "<script" not in page.lower() and "<link" not in page.lower()
    return [r for r in refs if not r.startswith("#")]


def count_groups(path: Path) -> tuple[int, int]:
    with h5py.File(path, "r") as f:
        ok = sum(1 for k in f if k.startswith("cfg-"))
        failed = sum(1 for k in f if k.startswith("fail-"))
    return ok, failed


def test_report_of_a_real_sweep(sweep: Path, tmp_path: Path) -> None:
    result = write_report(sweep, tmp_path / "rep", top_k=2)
    index = tmp_path / "rep" / "index.html"
    assert result.index_html == index and index.is_file()
    page = index.read_text(encoding="utf-8")
    links = local_links(index)
    assert links, "expected images"
    for link in links:
        assert (index.parent / link).is_file(), f"broken link {link}"
    for label in SITES:
        assert label in page
    # 2 sites: one axes figure each, iea37-16 has 4 results (2 shown), hornsrev1-16 has 1;
    # iea37-16 also gets its best layout beside the published par4 and par12.
    pngs = sorted(p.name for p in (tmp_path / "rep").glob("*.png"))
    assert len(pngs) == 2 + 2 + 1 + 1 == len(result.images)
    assert "published-iea37-16.png" in pngs
    for png in (tmp_path / "rep").glob("*.png"):
        width, height = png_size(png)
        assert 400 <= width <= 3000 and 300 <= height <= 2000, (png, width, height)
    ok, failed = count_groups(sweep)
    s = result.summary
    assert (
        (s["planned"], s["done"], s["failed"], s["pending"]) == (ok, ok, failed, 0) == (5, 5, 0, 0)
    )
    assert result.complete and s["check"]["ok"] is True
    by_site = {x["site"]: x for x in s["sites"]}
    assert by_site["iea37-16"]["done"] == 4 and by_site["hornsrev1-16"]["done"] == 1
    with h5py.File(sweep, "r") as f:
        aeps = [
            float(f[k].attrs["aep_gwh"])
            for k in f
            if k.startswith("cfg-") and f[k].attrs["site"] == b"iea37"
        ]
    assert by_site["iea37-16"]["best_aep_gwh"] == pytest.approx(max(aeps), abs=1e-4)
    assert by_site["iea37-16"]["worst_aep_gwh"] == pytest.approx(min(aeps), abs=1e-4)
    assert by_site["iea37-16"]["iea37_best_published_gwh"] == pytest.approx(418.9244)
    assert by_site["hornsrev1-16"]["iea37_best_published_gwh"] is None
    assert "dominant direction" in page or "dominant wind direction" in page
    assert "h5guard_last_merge" in page and "OK:" in page
    # Figures are plain Figure objects: none is left registered with pyplot (which PyWake
    # imports on its own).
    if "matplotlib.pyplot" in sys.modules:
        assert sys.modules["matplotlib.pyplot"].get_fignums() == []


def test_default_report_dir_is_next_to_the_output(sweep: Path) -> None:
    assert default_report_dir(sweep) == sweep.parent / "layouts_report"


def test_report_shows_failures_escaped(with_failure: tuple[Path, str], tmp_path: Path) -> None:
    path, failed_id = with_failure
    result = write_report(path, tmp_path / "rep", top_k=1, run_check=False)
    page = result.index_html.read_text(encoding="utf-8")
    assert failed_id in page
    # Escaped by the template's autoescape (markupsafe writes " as &#34;).
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; ValueError: boom" in page
    assert NASTY_ERROR in html.unescape(page)
    assert "<script>" not in page
    for link in local_links(result.index_html):
        assert (result.index_html.parent / link).is_file()
    ok, failed = count_groups(path)
    s = result.summary
    assert (s["planned"], s["done"], s["failed"], s["pending"]) == (7, ok, failed, 1)
    assert s["failed_configs"] == [
        {"config_id": failed_id, "site": "iea37-16", "error": NASTY_ERROR}
    ]
    assert not result.complete


def test_report_of_an_empty_output(empty_output: Path, tmp_path: Path) -> None:
    result = write_report(empty_output, tmp_path / "rep")
    page = result.index_html.read_text(encoding="utf-8")
    assert "No results in this output yet" in page
    assert result.images == () and local_links(result.index_html) == []
    s = result.summary
    assert (s["planned"], s["done"], s["failed"], s["pending"]) == (5, 0, 0, 5)
    assert {x["site"] for x in s["sites"]} == set(SITES)
    assert all(x["best_aep_gwh"] is None for x in s["sites"])


def test_bad_inputs(tmp_path: Path) -> None:
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5\n")
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = [1, 2, 3]
    missing = tmp_path / "missing.h5"
    for bad in (text, foreign, missing, tmp_path):
        with pytest.raises(NotASweepOutputError) as info:
            write_report(bad, tmp_path / "rep")
        assert "\n" not in str(info.value) and str(bad) in str(info.value)
        with pytest.raises(NotASweepOutputError):
            write_layout_plot(bad, "cfg-0", tmp_path / "x.png")
    assert not (tmp_path / "rep").exists()


def test_show_writes_a_png_and_rejects_unknown_ids(
    sweep: Path, with_failure: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    best = read_sweep(sweep).top("iea37-16", 1)[0].key
    out = write_layout_plot(sweep, best, tmp_path / "best.png")
    width, height = png_size(out)
    assert 400 <= width <= 2000 and 400 <= height <= 2000
    # A unique prefix without "cfg-", and the default name in the current directory.
    monkeypatch.chdir(tmp_path)
    assert write_layout_plot(sweep, best.removeprefix("cfg-")[:10]) == Path(f"{best}.png")
    assert (tmp_path / f"{best}.png").is_file()
    with pytest.raises(UnknownConfigError, match="no result for config id 'cfg-nope'"):
        write_layout_plot(sweep, "cfg-nope")
    path, failed_id = with_failure
    with pytest.raises(UnknownConfigError, match=r"failed .* it has no layout") as info:
        write_layout_plot(path, failed_id)
    assert "\n" not in str(info.value)
    assert issubclass(UnknownConfigError, NotASweepOutputError)


def test_cli_handlers(sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="layout-sweep")
    _report_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["report", str(sweep), "-o", str(tmp_path / "r"), "--top", "1", "--no-check", "--json"]
    )
    assert args.run(args) == 0  # complete; the check was not run
    doc = json.loads(capsys.readouterr().out)
    assert doc["done"] == 5 and doc["check"]["ok"] is None
    assert all(Path(p).is_file() for p in [doc["index_html"], *doc["images"]])
    args = parser.parse_args(
        ["show", str(sweep), doc["sites"][0]["best_config_id"], "-o", str(tmp_path / "one.png")]
    )
    assert args.run(args) == 0
    assert (tmp_path / "one.png").is_file()
    with pytest.raises(SystemExit):
        parser.parse_args(["report", str(sweep), "--top", "-1"])
    capsys.readouterr()


def test_missing_matplotlib_is_one_clear_error(
    sweep: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingExtraError, match=r'pip install "\.\[report\]"') as info:
        write_report(sweep, tmp_path / "rep")
    assert "\n" not in str(info.value) and isinstance(info.value, RuntimeError)
    with pytest.raises(MissingExtraError):
        write_layout_plot(sweep, read_sweep(sweep).ok[0].key, tmp_path / "x.png")


def test_run_summary_and_report_share_the_site_stats(
    sweep: Path, with_failure: tuple[Path, str]
) -> None:
    """``layout-sweep run``'s summary and the report compute the same SiteStats."""
    for path in (sweep, with_failure[0]):
        sites, errors = summarize(iter_records(str(path)))
        data = read_sweep(path)
        from_report = [
            dataclasses.replace(s, planned=None, pending=None)
            for s in data.site_stats()
            if s.best_aep_gwh is not None
        ]
        assert sites == from_report and sites
        assert errors == {cid: f.error for cid, f in data.failures.items()}
        assert all(isinstance(s, SiteStats) for s in sites)
        with pytest.raises(dataclasses.FrozenInstanceError):
            sites[0].done = 0  # type: ignore[misc]
    assert errors == {with_failure[1]: NASTY_ERROR}


def test_the_template_autoescapes_and_inlines_its_css() -> None:
    env = report_html._environment()
    assert env.autoescape is True
    css = (
        resources.files("optimizer._report")
        .joinpath("templates", report_html.STYLESHEET)
        .read_text(encoding="utf-8")
    )
    assert env.globals["css"] == css and '"Segoe UI"' in css
    source = env.loader.get_source(env, report_html.TEMPLATE)[0]
    for section in ("summary", "failures", "layouts", "published", "axes", "provenance"):
        assert f'<section id="{section}">' in source


def test_layout_figure_draws_exclusion_zones(tmp_path: Path) -> None:
    """The drawing a lease with exclusion zones needs (SiteGeometry.exclusions)."""
    import numpy as np

    from optimizer._report import figures

    square = np.array([[0.0, 0.0], [1000.0, 0.0], [1000.0, 1000.0], [0.0, 1000.0]])
    zone = np.array([[400.0, 400.0], [600.0, 400.0], [500.0, 600.0]])
    turbines = np.array([[100.0, 100.0], [900.0, 900.0]])
    fig = figures.layout_figure(
        title="lease",
        boundary=square,
        initial=None,
        optimized=turbines,
        min_spacing_m=200.0,
        exclusions=[zone],
    )
    legend = fig.axes[0].get_legend()
    assert "exclusion zone" in [t.get_text() for t in legend.get_texts()]
    assert png_size(figures.save_png(fig, tmp_path / "lease.png"))[0] >= 400
    figures.close(fig)


def test_site_geometry_draws_every_region_and_exclusion_of_a_spec_site() -> None:
    """The report draws a lease from the site's outline: all five CS4 regions, and the
    exclusions of a site defined in a spec (through the config's stored site_def)."""
    from optimizer._report.flow import site_geometry
    from optimizer.farm import canonical_definition, resolve_site_table

    cs4 = site_geometry("iea37-cs4", 81)
    assert cs4.boundary is not None and len(cs4.regions) == 4
    assert cs4.lease_points is not None
    assert len(cs4.lease_points) == sum(len(r) for r in (cs4.boundary, *cs4.regions))
    table = {
        "boundary": [[0, 0], [6000, 0], [6000, 3000], [3000, 3000], [3000, 6000], [0, 6000]],
        "exclusions": [[[1000, 1000], [1600, 1000], [1600, 1600], [1000, 1600]]],
        "turbine": "py_wake.examples.data.hornsrev1:V80",
        "wind": {"frequency": [0.5, 0.5], "weibull_a": [9, 9], "weibull_k": [2, 2], "ti": 0.1},
        "wake": {"model": "Bastankhah_PorteAgel_2014", "k": 0.0324555},
    }
    site_def = canonical_definition(resolve_site_table("lfarm", table, base_dir=None))
    lfarm = site_geometry("lfarm", 12, site_def=site_def)
    assert lfarm.boundary is not None and len(lfarm.boundary) == 6
    assert len(lfarm.exclusions) == 1 and lfarm.regions == ()
