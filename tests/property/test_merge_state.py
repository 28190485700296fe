"""A state machine over a shard directory and its output, checked against a dict model.

Rules write shards (keys from a small pool, so duplicates and conflicts happen), damage
committed shards, crash writers (one that dies with its journal open, whose batch the
next merge recovers; an old-style stale ``.partial`` without a journal, reported lost;
or a torn file under a final name), merge, and crash merges (a leftover ``OUTPUT.partial``, or a real merge process
SIGKILLed at a drawn moment). The model is the output a merge must produce: for each key
the first committed good version, in merge order (the output's, then shards by path).
After every merge the output's ``{key: digest}`` must equal it; after a killed merge
the output must be the old or the new one.

``HYPOTHESIS_PROFILE=thorough`` runs many more and longer sequences (and more kills).
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import ClassVar

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule, run_state_machine_as_test

from h5guard import Sandbox, ShardWriter, merge, validate
from h5guard._atomic import writer_tag
from tests.crash._merge_child import (
    expected_digest,
    make_group,
    output_index,
    run_and_kill,
    sha256_file,
)

THOROUGH = os.environ.get("HYPOTHESIS_PROFILE") == "thorough"
KEYS = ("a", "b", "c", "d", "e", "f")
MAX_KILLS = 4 if THOROUGH else 1  # real SIGKILLed merges per sequence (~1 s each)
Model = dict[str, str]


def content(key: str, variant: int) -> tuple[dict[str, object], dict[str, object]]:
    datasets, attrs = make_group(KEYS.index(key), variant=variant)
    return dict(datasets), attrs


def digest(key: str, variant: int) -> str:
    return expected_digest(KEYS.index(key), variant=variant)


def simulate(output: Model, pending: dict[Path, Model]) -> tuple[Model, set[Path]]:
    """The output a merge must write, and the shards it must quarantine as conflicting."""
    new = dict(output)
    conflicted: set[Path] = set()
    for path in sorted(pending, key=str):
        for key, value in sorted(pending[path].items()):
            if key not in new:
                new[key] = value
            elif new[key] != value:
                conflicted.add(path)
    return new, conflicted


_DEAD: list[int] = []


def dead_pid() -> int:
    if not _DEAD:
        child = subprocess.Popen([sys.executable, "-c", "pass"])
        child.wait()
        _DEAD.append(child.pid)
    return _DEAD[0]


class MergeMachine(RuleBasedStateMachine):
    base: ClassVar[Path]
    box: ClassVar[Sandbox]
    counter: ClassVar[itertools.count[int]]
    ran: ClassVar[Counter[str]]

    def __init__(self) -> None:
        super().__init__()
        self.root = self.base / f"seq{next(self.counter)}"
        self.tmp = self.root / "tmp"
        self.tmp.mkdir(parents=True)
        self.out = self.root / "out.h5"
        self.output: Model = {}
        self.pending: dict[Path, Model] = {}  # committed good shards not merged yet
        self.damaged: set[Path] = set()  # must be quarantined by the next merge
        self.partials: dict[Path, str] = {}  # writer leftovers: never touched
        self.journal_of: dict[Path, Path] = {}  # pending shard -> the journal it comes from
        self.kills = 0
        self.names = itertools.count()

    # -- writers ------------------------------------------------------------------
    @rule(
        keys=st.lists(st.sampled_from(KEYS), min_size=1, max_size=3, unique=True),
        variant=st.integers(0, 1),
    )
    def write_shard(self, keys: list[str], variant: int) -> None:
        self.ran["write_shard"] += 1
        with ShardWriter(self.tmp, commit_every=100) as w:
            for key in keys:
                w.add(key, *content(key, variant))
        [path] = w.committed
        self.pending[path] = {key: digest(key, variant) for key in keys}

    @rule(
        keys=st.lists(st.sampled_from(KEYS), min_size=1, max_size=2, unique=True),
        how=st.sampled_from(["journal", "legacy-partial", "torn"]),
    )
    def crash_writer(self, keys: list[str], how: str) -> None:
        """A writer dies with its batch open."""
        self.ran[f"crash_writer {how}"] += 1
        n = next(self.names)
        if how == "journal":  # a real death: the child journals its adds and exits at once
            before = set(self.tmp.glob("*.journal"))
            pid = os.fork()
            if pid == 0:
                try:
                    w = ShardWriter(self.tmp, prefix="crashed", commit_every=100)
                    for key in keys:
                        w.add(key, *content(key, 0))
                finally:
                    os._exit(0)
            os.waitpid(pid, 0)
            [journal] = set(self.tmp.glob("*.journal")) - before
            shard = journal.with_name(journal.name.removesuffix(".journal"))
            self.pending[shard] = {key: digest(key, 0) for key in keys}
            self.journal_of[shard] = journal
            return
        with ShardWriter(self.root / "scratch", prefix="crashed", commit_every=100) as w:
            for key in keys:
                w.add(key, *content(key, 0))
        [shard] = w.committed
        if how == "torn":  # a non-h5guard writer's file under its final name: refused
            target = self.tmp / f"worker{n}.h5"
            raw = shard.read_bytes()
            target.write_bytes(raw[: len(raw) // 2])
            self.damaged.add(target)
        else:  # what a writer without a journal left: its batch is lost, and said so
            host = writer_tag().rsplit("-", 1)[0]
            target = self.tmp / f"shard-20200101T000000-{host}-{dead_pid()}-{n:08x}.h5.partial"
            target.write_bytes(shard.read_bytes()[:2000])
            self.partials[target] = sha256_file(target)
        shard.unlink()

    @precondition(lambda self: bool(self.pending))
    @rule(data=st.data(), how=st.sampled_from(["empty", "truncate", "garbage", "bitflip"]))
    def damage_shard(self, data: st.DataObject, how: str) -> None:
        self.ran["damage_shard"] += 1
        path = data.draw(st.sampled_from(sorted(self.pending, key=str)), label="shard")
        raw = bytearray(path.read_bytes())
        if how == "empty":
            raw = bytearray()
        elif how == "truncate":
            raw = raw[: data.draw(st.integers(1, len(raw) - 1), label="cut")]
        elif how == "garbage":
            raw = bytearray(b"garbage " * 64)
        else:  # one bit of a group's layout values: checksummed header, and digest
            key = data.draw(st.sampled_from(sorted(self.pending[path])), label="key")
            variant = 0 if self.pending[path][key] == digest(key, 0) else 1
            needle = content(key, variant)[0]["layout"].tobytes()  # type: ignore[attr-defined]
            at = raw.find(needle)
            assert at >= 0
            raw[at + data.draw(st.integers(0, len(needle) - 1), label="byte")] ^= 0x04
        path.write_bytes(bytes(raw))
        del self.pending[path]
        self.damaged.add(path)

    # -- merges -------------------------------------------------------------------
    @rule()
    def merge_now(self) -> None:
        self.ran["merge_now"] += 1
        want, conflicted = simulate(self.output, self.pending)
        report = merge(self.tmp, self.out, workers=1)
        assert output_index(self.out) == want
        quarantined = {Path(q.path).name for q in report.quarantined}
        assert quarantined == {p.name for p in self.damaged | conflicted}
        assert {(self.tmp / "quarantine" / n).exists() for n in quarantined} <= {True}
        assert {Path(s).name for _, s in report.conflicts} == {p.name for p in conflicted}
        assert report.exit_code == (1 if quarantined or self.partials else 0)
        assert len(report.lost) == len(self.partials)
        assert not list(self.tmp.glob("*.journal"))
        left = {p for p in self.tmp.iterdir() if p.suffix == ".h5"}
        assert left == set(), f"not merged and not quarantined: {left}"
        assert not Path(f"{self.out}.partial").exists()
        assert set(report.stale_partials) == {str(p) for p in self.partials}
        self.check_partials()
        self.output, self.pending, self.damaged = want, {}, set()

    @rule()
    def leave_merge_partial(self) -> None:
        """What a merge killed while building its new output leaves behind."""
        self.ran["leave_merge_partial"] += 1
        Path(f"{self.out}.partial").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\xff" * 3000)

    @precondition(lambda self: self.kills < MAX_KILLS)
    @rule(
        anchor=st.sampled_from([None, "plan", "write", "commit", "committed"]),
        offset=st.floats(0.0, 0.05),
    )
    def kill_a_merge(self, anchor: str | None, offset: float) -> None:
        self.ran["kill_a_merge"] += 1
        self.kills += 1
        old_sha = sha256_file(self.out) if self.out.exists() else None
        want, _ = simulate(self.output, self.pending)
        # From start-up, interpreter and imports take most of a second.
        run_and_kill(self.root, anchor, offset + (0.5 if anchor is None else 0.0))
        actual = output_index(self.out) if self.out.exists() else {}
        assert actual in (self.output, want), "output is neither the old nor the new one"
        if actual != want:
            assert (sha256_file(self.out) if self.out.exists() else None) == old_sha
        if self.out.exists():
            report = validate(self.out, sandbox=self.box)
            assert report.ok, report.render_text()
        for path in list(self.pending):
            journal = self.journal_of.get(path)
            if not path.exists() and not (journal is not None and journal.exists()):
                assert actual == want, f"{path.name} gone before the output was replaced"
                del self.pending[path]
        for path in list(self.damaged):
            if not path.exists():
                assert (self.tmp / "quarantine" / path.name).exists()
                self.damaged.discard(path)
        self.check_partials()
        self.output = actual

    def check_partials(self) -> None:
        for path, sha in self.partials.items():
            assert sha256_file(path) == sha, f"{path.name} was modified"


@pytest.mark.slow
def test_merge_state_machine(tmp_path: Path, sandbox: Sandbox) -> None:
    class Machine(MergeMachine):
        pass

    Machine.base = tmp_path
    Machine.box = sandbox
    Machine.counter = itertools.count()
    Machine.ran = Counter()
    run_state_machine_as_test(  # type: ignore[no-untyped-call]
        Machine,
        settings=settings(
            max_examples=60 if THOROUGH else 6,
            stateful_step_count=30 if THOROUGH else 12,
        ),
    )
    print(f"rules run: {dict(Machine.ran)}")
    assert Machine.ran["merge_now"] >= 1 and Machine.ran["kill_a_merge"] >= 1, Machine.ran


def test_merge_machine_crash_rules_in_a_fixed_sequence(tmp_path: Path, sandbox: Sandbox) -> None:
    """The short random run may not draw every rule: this sequence always runs the crash
    rules, with the same model checks."""

    class Machine(MergeMachine):
        pass

    Machine.base = tmp_path
    Machine.box = sandbox
    Machine.counter = itertools.count()
    Machine.ran = Counter()
    m = Machine()
    m.write_shard(list(KEYS[:2]), 0)
    m.crash_writer([KEYS[0], KEYS[2]], "journal")
    m.crash_writer([KEYS[3]], "legacy-partial")
    m.crash_writer([KEYS[1]], "torn")
    m.merge_now()
    m.crash_writer([KEYS[4]], "journal")
    m.kill_a_merge("write", 0.0)
    m.merge_now()
    assert Machine.ran["crash_writer journal"] == 2 and Machine.ran["merge_now"] == 2
