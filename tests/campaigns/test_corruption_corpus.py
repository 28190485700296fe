"""The corruption campaign's corpus row: mutations of real files other projects wrote."""

from __future__ import annotations

from campaigns import corruption, render_result


def test_corruption_short_covers_the_corpus_originals() -> None:
    result = corruption.run(budget=12, seed=2, corpus=True)
    assert result.ok, render_result(result, markdown=False)
    rows = {r.scenario: r for r in result.rows}
    total = rows["corpus: all"]
    assert total.runs > 50 and total.crashes == 0 and total.hangs == 0
    cut = rows["corpus: truncation"]
    # A cut inside the bytes PyTables leaves past the end of file loses nothing: it
    # passes, and the read-back proves it; every other cut is flagged.
    assert cut.runs > 0 and cut.silent == 0 and cut.flagged + cut.passed == cut.runs
    assert not [n for n in result.notes if n.startswith("corpus original skipped")]
