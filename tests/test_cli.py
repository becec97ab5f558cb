"""``python -m fastcore bench`` end to end (tiny workloads) and its parts.

The subprocess runs use ``--quick --tiny`` so the whole CLI (sweep, threads, peers, JSON,
plot, compare) finishes in seconds; figures are never asserted, only their shape.
"""

import copy
import io
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from fastcore.benchmark import cli, compare, progress, registry, report, runner, schema
from fastcore.benchmark.workload import MIN_ROUNDS, Workload, measure, measure_threads

TOKEN_PEERS = 6          # fastcore/benchmark/token.py PEERS: one row each per keyed group


def bench(tmp_path, *arguments, check_code=None):
    """Run ``python -m fastcore bench ...`` in ``tmp_path`` (never the source tree)."""
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-m", "fastcore", "bench", *arguments],
                          cwd=tmp_path, env=environment, capture_output=True, text=True,
                          timeout=300)
    if check_code is not None:
        assert done.returncode == check_code, (done.stdout, done.stderr)
    return done


def png_size(path: Path) -> tuple:
    """(width, height) from a PNG's IHDR chunk, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """One tiny run of every structure with every output option but peers:
    (completed process, JSON document, PNG path)."""
    folder = tmp_path_factory.mktemp("bench")
    done = bench(folder, "--quick", "--tiny", "--keys", "10", "--threads", "2",
                 "--json", "out.json", "--plot", "out.png", "--progress", "plain",
                 check_code=0)
    document = json.loads((folder / "out.json").read_text())
    return done, document, folder / "out.png"


@pytest.fixture(scope="module")
def peers_run(tmp_path_factory):
    """The token buckets with ``--peers`` (every peer call is a few ms even when tiny)."""
    folder = tmp_path_factory.mktemp("peers")
    done = bench(folder, "--tiny", "--only", "token", "--keys", "10", "--peers",
                 "--memory-keys", "0", "--progress", "none", "--json", "peers.json",
                 check_code=0)
    return done, json.loads((folder / "peers.json").read_text())


def test_report_names_machine_versions_noise_and_table(full_run):
    done, document, _ = full_run
    out = done.stdout
    for label in ("machine ", "versions ", "noise ", "structures ", "sweep "):
        assert f"\n{label}" in out
    assert f"numpy {document['versions']['numpy']}" in out
    assert f"fastcore {document['versions']['fastcore']}" in out
    assert "| operation " in out and "ns/op" in out and "ops/s" in out
    assert "vs fastcore" in out and "vs floor" in out
    assert "try_acquire hot key" in out
    assert "memory: structures built at 1,000 keys" in out
    # plain progress (stderr is a pipe): one line per sweep point
    assert "token keys=10 batch=16" in done.stderr
    assert "token memory at 1,000 keys" in done.stderr


def test_every_structure_is_listed_and_ran(full_run):
    # Every structure is built in this tree, so each must have run: an extension that fails
    # to import would be listed as absent, and that is a failure here.
    done, document, _ = full_run
    listed = {s["name"]: s for s in document["structures"]}
    assert set(listed) == set(registry.MODULES) - {registry.REDIS}
    for name, entry in listed.items():
        assert entry["status"] == "ok", entry
        assert f"{name}: absent: " not in done.stdout


def test_json_matches_schema(full_run):
    _, document, _ = full_run
    jsonschema.validate(document, schema.SCHEMA)
    assert document["schema_version"] == schema.SCHEMA_VERSION
    assert document["settings"]["mode"] == "tiny"
    assert document["settings"]["keys"] == [10]
    assert document["command"][:2] == ["fastcore", "bench"]


def test_json_figures_cover_threads_and_ratios(full_run):
    _, document, _ = full_run
    token = [f for f in document["figures"] if f["structure"] == "token"]
    measured = [f for f in token if f["status"] == "ok"]
    assert measured and all(f["median_ns"] > 0 and f["ops_per_s"] > 0 for f in measured)
    # each group's first fastcore row is its own reference
    fastcore_rows = [f for f in measured if f["kind"] == "fastcore" and f["ratio_to_fastcore"]]
    assert any(f["ratio_to_fastcore"] == 1.0 for f in fastcore_rows)
    threaded = [f for f in token if f["threads"] == 2]
    assert threaded and all(f["batch"] is not None for f in threaded)
    assert not [f for f in document["figures"] if f["kind"] == "peer"]   # no --peers


def test_every_peer_is_measured_or_reported_missing(peers_run):
    done, document = peers_run
    jsonschema.validate(document, schema.SCHEMA)
    assert "\npeers " in done.stdout
    peers = [f for f in document["figures"] if f["kind"] == "peer"]
    hot = [f for f in peers
           if f["structure"] == "token" and f["operation"] == "try_acquire hot key"]
    assert len(hot) == TOKEN_PEERS
    for figure in peers:
        assert figure["status"] in ("ok", "missing"), figure
        if figure["status"] == "missing":
            assert figure["peer"] in document["peers"]
            assert document["peers"][figure["peer"]] is None
            assert "MISSING" in done.stdout
        else:
            assert document["peers"][figure["peer"]] == figure["peer_version"]


def test_memory_figures(full_run):
    _, document, _ = full_run
    keyed = [m for m in document["memory"] if m["structure"] == "token" and m["keys"]]
    assert keyed and keyed[0]["keys"] == 1000 and keyed[0]["per"] == "key"
    item = keyed[0]
    assert item["total_bytes"] == item["python_bytes"] + item["core_bytes"]
    assert item["bytes_per_unit"] == pytest.approx(item["total_bytes"] / 1000)
    assert item["core_bytes"] >= 8 * 1000          # at least the 8-byte TAT per key


def test_plot_is_a_png_that_opens(full_run):
    _, _, path = full_run
    width, height = png_size(path)
    assert width > 200 and height > 200
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(path) as image:
        image.verify()


def test_console_script_prints_the_schema():
    script = Path(sys.executable).parent / "fastcore"
    if not script.exists():
        pytest.skip("console script not installed beside this interpreter")
    done = subprocess.run([str(script), "bench", "--schema"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == schema.SCHEMA


def _scaled(document: dict, factor: float) -> dict:
    """The document with fastcore's rows (not the floors, the machine's yardstick) and
    their quartiles ``factor`` times as long."""
    scaled = copy.deepcopy(document)
    for figure in scaled["figures"]:
        if figure["median_ns"] and figure["kind"] == "fastcore":
            for name in ("median_ns", "q1_ns", "q3_ns"):
                figure[name] *= factor
    return scaled


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compare")
    done = bench(folder, "--quick", "--tiny", "--only", "token", "--keys", "10,100",
                 "--memory-keys", "0", "--progress", "none", "--json", "base.json",
                 check_code=0)
    return folder, json.loads((folder / "base.json").read_text()), done.stdout


def test_keys_sweep_times_each_figure_once(baseline):
    _, document, out = baseline
    assert "token: scaling with live keys" in out
    assert "| try_acquire N keys round robin · fastcore.KeyedTokenBucket " in out
    jsonschema.validate(document, schema.SCHEMA)
    assert document["memory"] == [] and document["settings"]["memory_keys"] == 0
    token = document["figures"]
    assert {f["keys"] for f in token if f["keys"] is not None} == {10, 100}
    # the hot-key group appears at every sweep point but is timed once
    identities = [(f["operation"], f["subject"], f["keys"], f["batch"], f["threads"])
                  for f in token]
    assert len(identities) == len(set(identities))
    assert sum(f["operation"] == "try_acquire hot key" for f in token) == 3


def test_compare_exits_1_when_a_figure_got_slower(baseline):
    folder, document, _ = baseline
    (folder / "fast.json").write_text(json.dumps(_scaled(document, 0.001)))
    done = bench(folder, "--tiny", "--only", "token", "--keys", "10", "--memory-keys", "0",
                 "--progress", "none", "--compare", "fast.json", "--tolerance", "0.2",
                 check_code=1)
    assert "compared with fast.json (tolerance 20% slower" in done.stdout
    assert "SLOWER" in done.stdout


def test_compare_exits_0_when_nothing_got_slower(baseline):
    folder, document, _ = baseline
    (folder / "slow.json").write_text(json.dumps(_scaled(document, 1000.0)))
    done = bench(folder, "--tiny", "--only", "token", "--keys", "10", "--memory-keys", "0",
                 "--progress", "none", "--compare", "slow.json", check_code=0)
    assert "fastcore rows: 0 slower beyond tolerance" in done.stdout
    assert "| faster" in done.stdout


@pytest.mark.parametrize("arguments, message", [
    (["--keys", "abc"], "argument --keys: 'abc' is not a number"),
    (["--keys", "1.5"], "'1.5' is not a whole number"),
    (["--batch", "0"], "'0' is not a whole number"),
    (["--only", "tokens"], "unknown structure 'tokens'"),
    (["--only", "redis"], "Redis is selected with --redis URL"),
    (["--threads", "0"], "--threads must be at least 1"),
    (["--threads", "two"], "argument --threads: invalid int value"),
    (["--tolerance", "0.1"], "--tolerance needs --compare"),
    (["--compare", "no-such.json"], "--compare: cannot read no-such.json"),
    (["--compare", "not-json.json"], "not-json.json is not JSON"),
    (["--compare", "other.json"], "not a fastcore bench results file"),
    (["--json", "no/such/folder/out.json"], "does not exist"),
    (["--redis", "localhost:6379"], "--redis takes a URL"),
    (["--no-such-option"], "unrecognized arguments: --no-such-option"),
])
def test_bad_options_exit_2_with_a_message(tmp_path, arguments, message):
    (tmp_path / "not-json.json").write_text("{")
    (tmp_path / "other.json").write_text('{"figures": []}')
    done = bench(tmp_path, *arguments, check_code=2)
    assert message in done.stderr
    assert "usage: fastcore" in done.stderr
    assert done.stdout == ""


def test_no_command_prints_help(tmp_path):
    done = subprocess.run([sys.executable, "-m", "fastcore"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: fastcore")
    assert "bench" in done.stdout and "--version" in done.stdout


def test_version_comes_from_the_package(tmp_path):
    import importlib.metadata

    import fastcore
    done = subprocess.run([sys.executable, "-m", "fastcore", "--version"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"fastcore {fastcore.__version__}\n"
    # the distribution's metadata is read from the same place when the wheel is built
    assert importlib.metadata.version("fastcore-edge") == fastcore.__version__


# In-process parts: the runner's reporting of what could not run, compare, progress.

def _settings(**overrides):
    values = dict(structures=[], keys=[10], batch=[4], rounds=2, round_time=0.0005,
                  max_time=None, memory_keys=0, mode="tiny")
    values.update(overrides)
    return runner.Settings(**values)


def _fake_module(tmp_path, monkeypatch, name, source):
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(registry.MODULES, name, name)


FAKE_WORKLOADS = '''
from fastcore.benchmark.workload import MIN_ROUNDS, Workload, measure, measure_threads

def _run():
    return lambda: sum(range(10))

def _broken():
    raise RuntimeError("setup exploded")

def workloads(keys, batch):
    return [
        Workload("fake", "sum", "fastcore.Fake", _run, 10, keys=keys),
        Workload("fake", "sum", "floor: sum", _run, 10, kind="floor", keys=keys),
        Workload("fake", "sum", "no-such-peer", _run, 10, kind="peer",
                 peer="fastcore-no-such-peer-distribution", keys=keys),
        Workload("fake", "broken", "fastcore.Broken", _broken, 1),
    ]
'''


def test_missing_peer_and_broken_workload_are_reported(tmp_path, monkeypatch):
    _fake_module(tmp_path, monkeypatch, "fake_bench_module", FAKE_WORKLOADS)
    result = runner.run(_settings(structures=["fake_bench_module"], peers=True),
                        progress.NullProgress())
    by_subject = {f.subject: f for f in result.figures}
    assert by_subject["fastcore.Fake"].status == "ok"
    assert by_subject["fastcore.Fake"].ratio_to_fastcore == 1.0
    assert by_subject["floor: sum"].ratio_to_floor == 1.0
    missing = by_subject["no-such-peer"]
    assert missing.status == "missing" and "not installed" in missing.detail
    assert result.peers == {"fastcore-no-such-peer-distribution": None}
    assert by_subject["fastcore.Broken"].status == "error"
    assert "RuntimeError: setup exploded" in by_subject["fastcore.Broken"].detail
    assert any("setup exploded" in line for line in result.failures)
    text = report.render(result)
    assert "MISSING: fastcore-no-such-peer-distribution" in text
    assert "no-such-peer: missing:" in text


def test_peers_are_skipped_without_the_option(tmp_path, monkeypatch):
    _fake_module(tmp_path, monkeypatch, "fake_bench_module", FAKE_WORKLOADS)
    result = runner.run(_settings(structures=["fake_bench_module"]), progress.NullProgress())
    assert all(f.kind != "peer" for f in result.figures)


def test_module_that_fails_to_import_is_reported(tmp_path, monkeypatch):
    _fake_module(tmp_path, monkeypatch, "fake_broken_bench", "raise ImportError('no cython')\n")
    loaded = registry.load("fake_broken_bench")
    assert loaded.status == "import-error" and "no cython" in loaded.detail
    monkeypatch.setitem(registry.MODULES, "fake_absent_bench", "fake_absent_bench_nowhere")
    assert registry.load("fake_absent_bench").status == "absent"
    result = runner.run(_settings(structures=["fake_broken_bench", "fake_absent_bench"]),
                        progress.NullProgress())
    assert [s["status"] for s in result.structures] == ["import-error", "absent"]
    assert result.failures == ["fake_broken_bench: import-error: ImportError: no cython"]


def test_threads_give_aggregate_figures(tmp_path, monkeypatch):
    source = FAKE_WORKLOADS.replace('"sum", "fastcore.Fake", _run, 10, keys=keys',
                                    '"sum", "fastcore.Fake", _run, 10, keys=keys, batch=batch')
    _fake_module(tmp_path, monkeypatch, "fake_batch_bench_module", source)
    result = runner.run(_settings(structures=["fake_batch_bench_module"], threads=3),
                        progress.NullProgress())
    threaded = [f for f in result.figures if f.threads == 3]
    assert [f.subject for f in threaded] == ["fastcore.Fake"]
    assert threaded[0].status == "ok" and threaded[0].median_ns > 0


MEMORY_WORKLOADS = '''
from fastcore.benchmark.workload import Workload

def _setup(keys):
    def setup():
        table = [object() for _ in range(keys or 1)]    # Python objects tracemalloc sees
        run = lambda: None
        run.table = table
        return run
    return setup

def workloads(keys, batch):
    return [
        Workload("cache", "get hot", "fastcore.Cache", _setup(None), 1,
                 memory=lambda run: 1000),
        Workload("cache", "get round robin", "fastcore.Cache", _setup(keys), 1, keys=keys,
                 memory=lambda run: 8 * len(run.table)),
        Workload("cache", "get round robin", "fastcore.NoAccounting", _setup(keys), 1,
                 keys=keys, memory=lambda run: None),
        Workload("cache", "get round robin", "peer", _setup(keys), 1, kind="peer",
                 peer="x", keys=keys, memory=lambda run: 1),
    ]
'''


def test_memory_pass_builds_each_subject_once_at_the_most_keys(tmp_path, monkeypatch):
    _fake_module(tmp_path, monkeypatch, "fake_memory_bench", MEMORY_WORKLOADS)
    result = runner.run(_settings(structures=["fake_memory_bench"], keys=[1],
                                  memory_keys=2000), progress.NullProgress())
    assert [(m.subject, m.keys, m.per) for m in result.memory] == [
        ("fastcore.Cache", 2000, "entry"), ("fastcore.NoAccounting", 2000, "entry")]
    cache, plain = result.memory
    assert cache.core_bytes == 16_000
    assert cache.python_bytes >= 2000 * 16           # 2,000 objects and the list holding them
    assert cache.total_bytes == cache.python_bytes + cache.core_bytes
    assert cache.bytes_per_unit == pytest.approx(cache.total_bytes / 2000)
    assert plain.core_bytes is None and plain.total_bytes == plain.python_bytes
    document = schema.to_document(result, ["fastcore", "bench"])
    jsonschema.validate(document, schema.SCHEMA)
    assert "| fastcore.NoAccounting " in report.render(result)


def test_groups_expand_to_structures():
    assert registry.expand_groups(["cache"]) == ["ttlcache", "semantic"]
    assert registry.expand_groups(["histogram", "token"]) == ["token", "histogram"]
    with pytest.raises(ValueError, match="unknown structure 'x'"):
        registry.expand_groups(["x"])


def test_parse_counts():
    assert cli.parse_counts("1e3,1e5,100_000, 1000") == [1000, 100000]
    assert cli.parse_count("0") == 0
    assert cli.parse_count("1e6") == 1_000_000


def _document(*figures):
    return {"machine": {"cpu": "x"}, "settings": {"mode": "tiny"}, "figures": [
        {"structure": "token", "operation": op, "subject": "s", "kind": "fastcore",
         "keys": None, "batch": None, "threads": 1, "status": status, "median_ns": ns}
        for op, ns, status in figures]}


def test_compare_tolerance_boundaries():
    old = _document(("a", 100.0, "ok"), ("b", 100.0, "ok"), ("c", 100.0, "ok"),
                    ("gone", 5.0, "ok"), ("was-missing", None, "missing"))
    new = _document(("a", 120.0, "ok"), ("b", 121.0, "ok"), ("c", 50.0, "ok"),
                    ("fresh", 1.0, "ok"), ("was-missing", 3.0, "ok"))
    result = compare.compare(old, new, 0.2)
    assert [c.identity[1] for c in result.regressions] == ["b"]
    assert [c.identity[1] for c in result.improvements] == ["c"]
    assert [i[1] for i in result.only_old] == ["gone"]
    assert sorted(i[1] for i in result.only_new) == ["fresh", "was-missing"]
    text = compare.render(result, "old.json")
    assert ("fastcore rows: 1 slower beyond tolerance, 1 faster, 0 beyond tolerance but "
            "within noise, 1 within tolerance") in text


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_falls_back_to_one_plain_line_without_rich(monkeypatch):
    monkeypatch.setitem(sys.modules, "rich", None)      # import rich -> ImportError
    monkeypatch.setitem(sys.modules, "rich.console", None)
    stream = _Terminal()
    shown = progress.make("auto", stream)
    assert isinstance(shown, progress.PlainProgress)
    shown.start(2)
    shown.point("token keys=10 batch=4")
    shown.advance(1)
    shown.describe("token keys=10 batch=4: try_acquire · fastcore")
    shown.finish()
    written = stream.getvalue()
    assert "\n" not in written                       # rewritten in place on a terminal
    assert "[ 50%]" in written and "try_acquire" in written


def test_progress_on_a_pipe_writes_one_line_per_point():
    stream = io.StringIO()
    shown = progress.make("auto", stream)
    shown.start(2)
    shown.point("first point")
    shown.describe("a workload")
    shown.point("second point")
    shown.finish()
    assert stream.getvalue().splitlines()[0].endswith("first point")
    assert len(stream.getvalue().splitlines()) == 2


def test_schema_rejects_other_versions(tmp_path):
    path = tmp_path / "v99.json"
    path.write_text(json.dumps({"schema_version": 99, "figures": []}))
    with pytest.raises(schema.SchemaError, match="schema_version 99"):
        schema.read(str(path))


def test_workload_record_is_unchanged_for_structure_modules():
    # the fields every structure module constructs Workloads with
    fields = list(Workload.__dataclass_fields__)
    assert fields == ["structure", "operation", "subject", "setup", "ops", "kind", "peer",
                      "keys", "batch", "memory"]


def _slow_workload():
    def setup():
        return lambda: sum(range(20_000))
    return Workload("fake", "slow sum", "fastcore.Slow", setup, 1)


def test_max_time_cuts_rounds_but_keeps_the_minimum():
    timing = measure(_slow_workload(), rounds=10_000, round_time=0.0001, max_time=0.0)
    assert len(timing.samples_ns) == MIN_ROUNDS
    timing = measure(_slow_workload(), rounds=3, round_time=0.0001, max_time=0.0)
    assert len(timing.samples_ns) == 3


def test_measure_threads_stops_its_threads_and_reraises_their_errors():
    import threading
    before = threading.active_count()
    timing = measure_threads(_slow_workload(), 3, rounds=10_000, round_time=0.0001,
                             max_time=0.0)
    assert len(timing.samples_ns) == MIN_ROUNDS and timing.threads == 3
    assert threading.active_count() == before

    calls = []

    def setup():
        def run():
            calls.append(1)
            if len(calls) > 3:            # warm-up and calibration pass, a thread fails
                raise RuntimeError("thread failed")
        return run

    with pytest.raises(RuntimeError, match="thread failed"):
        measure_threads(Workload("fake", "f", "fastcore.F", setup, 1), 2, rounds=50,
                        round_time=0.0)
    assert threading.active_count() == before


# Time caps: a row that runs past its cap is stopped and reported, never left running.

CAPPED_WORKLOADS = '''
import time
from fastcore.benchmark.workload import Workload

GIVE_UP_S = 120          # without a working cap these loops end here, and the test fails

def _spin():
    end = time.monotonic() + GIVE_UP_S
    while time.monotonic() < end:
        pass

def _slow_setup():
    _spin()
    return lambda: None

def _slow_call():
    return _spin

def _quick():
    return lambda: sum(range(10))

def workloads(keys, batch):
    return [
        Workload("fake", "sum", "fastcore.Quick", _quick, 10),
        Workload("fake", "slow setup", "peer in a Python loop", _slow_setup, 1, kind="peer",
                 peer="pytest"),
        Workload("fake", "slow call", "fastcore.SlowCall", _slow_call, 1),
        Workload("fake", "slow batch", "fastcore.SlowBatch", _slow_call, 1, batch=batch),
    ]
'''


def test_rows_over_their_cap_are_stopped_and_reported(tmp_path, monkeypatch):
    import threading
    _fake_module(tmp_path, monkeypatch, "fake_capped_bench", CAPPED_WORKLOADS)
    before = threading.active_count()
    result = runner.run(_settings(structures=["fake_capped_bench"], peers=True, threads=2,
                                  row_cap=0.3), progress.NullProgress())
    rows = {(f.subject, f.threads): f for f in result.figures}
    assert rows[("fastcore.Quick", 1)].status == "ok"
    assert (rows[("peer in a Python loop", 1)].status,
            rows[("peer in a Python loop", 1)].detail) == ("skipped", "over 0.3 s cap in setup")
    assert rows[("fastcore.SlowCall", 1)].detail == "over 0.3 s cap in warm-up call"
    for threads in (1, 2):
        assert rows[("fastcore.SlowBatch", threads)].status == "skipped"
    assert rows[("peer in a Python loop", 1)].median_ns is None
    assert threading.active_count() == before        # no worker left spinning
    assert result.failures == [] and result.failed == []
    text = report.render(result)
    assert "peer in a Python loop: skipped: over 0.3 s cap in setup" in text
    document = schema.to_document(result, ["fastcore", "bench"])
    jsonschema.validate(document, schema.SCHEMA)
    assert document["settings"]["row_cap_s"] == 0.3


def test_cap_stops_rounds_that_run_too_long():
    # every call is quick, but there are many rounds of many calls: stopped in timing
    timing_stage = []

    def setup():
        return lambda: sum(range(1000))
    workload = Workload("fake", "sum", "fastcore.Sum", setup, 1)
    from fastcore.benchmark.workload import OverCap, time_cap
    with pytest.raises(OverCap):
        with time_cap(0.2):
            measure(workload, rounds=10**9, round_time=0.001, on_stage=timing_stage.append)
    assert timing_stage == ["setup", "warm-up call", "timing"]


def _cost(keys, setup_s, first_call_s=0.001, ops=10_000):
    return runner._Cost(keys, ops, setup_s, first_call_s)


def test_projection_skips_rows_the_cap_cannot_hold():
    # cap 10 s: a row is skipped unprojected only beyond 2 x 10 s; rounds: 51 of 2 ms
    # within 0.5 s, at least 5
    settings = _settings(row_cap=10.0, rounds=51, round_time=0.002, max_time=0.5)
    costs = runner.Costs()
    workload = Workload("fake", "fill 1,000,000 keys", "peer", lambda: None, 10_000,
                        kind="peer", keys=1_000_000)
    series = costs._series("fake", workload, 1)
    # one smaller size: its setup is not projected (fixed and per-key work unknown)
    costs.series[series] = {100_000: _cost(100_000, 5.0)}
    assert costs.reason_to_skip("fake", workload, 1, settings) is None
    # two sizes: along the line through them, 2.5 s + 2.4 s per 99,000 keys x 900,000 keys
    # = 24.3 s of setup, one call of 1 ms and 51 rounds of 2 ms: 24.4 s > 20 s
    costs.series[series] = {1000: _cost(1000, 0.1), 100_000: _cost(100_000, 2.5)}
    assert costs.reason_to_skip("fake", workload, 1, settings) == (
        "projected 24 s > 10 s cap (setup 24.3 s, one call 0.00 s, from 100,000 keys)")
    # 12.3 s: over the cap but not clearly; it runs, and the cap stops it if it must
    costs.series[series] = {1000: _cost(1000, 0.1), 100_000: _cost(100_000, 1.3)}
    assert costs.reason_to_skip("fake", workload, 1, settings) is None
    # a call over every key: 0.1 s for 1,000 operations -> 100 s for 1,000,000, and at
    # least 5 rounds of one call: 600 s
    walk = Workload("fake", "walk 1,000,000 keys", "peer", lambda: None, 1_000_000,
                    kind="peer", keys=1_000_000)
    costs.series[costs._series("fake", walk, 1)] = {
        1000: runner._Cost(1000, 1000, 0.0, 0.1)}
    assert costs.reason_to_skip("fake", walk, 1, settings) == (
        "projected 600 s > 10 s cap (setup 0.0 s, one call 100.00 s, from 1,000 keys)")
    # over the cap at fewer keys already
    costs.series[series] = {100_000: runner._Cost(100_000, 10_000, over_cap=True)}
    assert (costs.reason_to_skip("fake", workload, 1, settings)
            == "over 10 s cap at 100,000 keys already")
    # other series, and rows that do not depend on keys, are never projected
    other = Workload("fake", "fill 1,000,000 keys", "another peer", lambda: None, 10_000,
                     kind="peer", keys=1_000_000)
    assert costs.reason_to_skip("fake", other, 1, settings) is None
    assert costs.reason_to_skip("fake", Workload("fake", "hot", "peer", lambda: None, 1),
                                1, settings) is None
    assert costs.reason_to_skip("fake", workload, 1, _settings(row_cap=None)) is None


SIZED_WORKLOADS = '''
import time
from fastcore.benchmark.workload import Workload

def _filled(keys):
    def setup():
        time.sleep(keys * 0.0001)             # a fill that costs 0.1 ms per key
        return lambda: None
    return setup

def workloads(keys, batch):
    return [Workload("fake", f"fill {keys:,} keys", "peer filled key by key",
                     _filled(keys), 1, kind="peer", peer="pytest", keys=keys)]
'''


def test_sweep_skips_a_size_projected_past_the_cap(tmp_path, monkeypatch):
    _fake_module(tmp_path, monkeypatch, "fake_sized_bench", SIZED_WORKLOADS)
    result = runner.run(_settings(structures=["fake_sized_bench"], peers=True,
                                  keys=[1000, 5000, 1_000_000], row_cap=20.0),
                        progress.NullProgress())
    by_keys = {f.keys: f for f in result.figures}
    assert by_keys[1000].status == by_keys[5000].status == "ok"
    big = by_keys[1_000_000]
    assert big.status == "skipped" and big.detail.startswith("projected ")
    assert "> 20 s cap" in big.detail and "from 5,000 keys" in big.detail


# Output written as results come in.

def test_interrupted_run_prints_and_writes_what_ran(tmp_path, monkeypatch):
    _fake_module(tmp_path, monkeypatch, "fake_first_bench", FAKE_WORKLOADS.replace(
        'Workload("fake", "broken", "fastcore.Broken", _broken, 1),', ''))
    _fake_module(tmp_path, monkeypatch, "fake_interrupt_bench", '''
from fastcore.benchmark.workload import Workload

def _interrupt():
    raise KeyboardInterrupt

def workloads(keys, batch):
    return [Workload("fake2", "never", "fastcore.Never", _interrupt, 1)]
''')
    monkeypatch.setitem(registry.GROUPS, "fake_first_bench", ("fake_first_bench",))
    top, _ = __import__("fastcore.__main__", fromlist=["parsers"]).parsers()
    args = top.parse_args(["bench", "--tiny", "--memory-keys", "0", "--progress", "none",
                           "--json", str(tmp_path / "out.json"),
                           "--plot", str(tmp_path / "out.png")])
    args.only = ["fake_first_bench", "fake_interrupt_bench"]
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    code = cli.run(args, [])
    assert code == cli.EXIT_INTERRUPTED
    document = json.loads((tmp_path / "out.json").read_text())
    jsonschema.validate(document, schema.SCHEMA)
    assert document["state"] == "interrupted"
    assert [f["subject"] for f in document["figures"]] == ["fastcore.Fake", "floor: sum"]
    assert png_size(tmp_path / "out.png")[0] > 200
    printed = out.getvalue()
    assert "\nfake_first_bench\n| operation " in printed          # the finished structure
    assert "duration   INTERRUPTED after" in printed


def test_json_is_complete_at_every_moment_of_a_killed_run(tmp_path):
    # A real run, killed (SIGKILL: nothing runs after it) once the first rows are written.
    import signal
    import time
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    process = subprocess.Popen(
        [sys.executable, "-m", "fastcore", "bench", "--only", "token", "--keys", "1e3,1e4",
         "--memory-keys", "0", "--progress", "none", "--json", "live.json"],
        cwd=tmp_path, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    path = tmp_path / "live.json"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            if path.exists() and json.loads(path.read_text())["figures"]:
                break
            time.sleep(0.05)
        assert process.poll() is None, "the run ended before it could be killed"
        process.send_signal(signal.SIGKILL)
        out, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    document = json.loads(path.read_text())        # never a truncated file
    jsonschema.validate(document, schema.SCHEMA)
    assert document["state"] == "running"
    assert document["figures"] and all(f["structure"] == "token" for f in document["figures"])
    assert b"fastcore bench \xc2\xb7 default mode" in out      # the header printed at once
    assert not list(tmp_path.glob(".fastcore-bench-*"))    # no temporary file left behind


# Redis rows that never reached Redis are failures, not figures.

def test_redis_that_cannot_be_reached_fails_its_rows(tmp_path):
    from redis_fixtures import free_port
    url = f"redis://127.0.0.1:{free_port()}/0"       # nothing listens there
    done = bench(tmp_path, "--tiny", "--only", "histogram", "--memory-keys", "0",
                 "--progress", "none", "--redis", url, "--json", "out.json",
                 check_code=cli.EXIT_FAILED)
    document = json.loads((tmp_path / "out.json").read_text())
    jsonschema.validate(document, schema.SCHEMA)
    rows = [f for f in document["figures"] if f["structure"] == "redis"]
    assert rows and all(f["status"] == "failed" for f in rows), rows
    for row in rows:
        assert row["median_ns"] is None and row["ops_per_s"] is None
        assert row["detail"].startswith("Redis not reachable: ConnectionError")
    assert all(f["status"] == "ok" for f in document["figures"] if f["structure"] != "redis")
    assert "failed rows (no figure)" in done.stderr
    assert "Connection refused" in done.stderr or "connecting" in done.stderr
    assert "| redis one decision per round trip, hot key " in done.stdout
    assert " failed " in done.stdout and "ops/s" in done.stdout


def test_redis_rows_fail_when_the_server_dies_after_setup(tmp_path):
    from redis_fixtures import RedisServer
    from fastcore.benchmark import redis as redis_bench
    from fastcore.benchmark.workload import Unavailable
    server = RedisServer(tmp_path)
    try:
        found = redis_bench.workloads(3, 2, server.url)
        runs = {(w.operation, w.subject): w.setup() for w in found}
        for run in runs.values():
            run()                                  # all reach the server
        server.kill()
        for (operation, subject), run in runs.items():
            with pytest.raises(Unavailable):
                run()
    finally:
        server.stop()


# Schema version 2 and the files of version 1.

def test_compare_reads_version_1_files(tmp_path, baseline):
    _, document, _ = baseline
    old = copy.deepcopy(document)
    old["schema_version"] = 1
    del old["state"]
    for item in old["memory"]:
        del item["status"], item["detail"]
    path = tmp_path / "v1.json"
    path.write_text(json.dumps(old))
    assert schema.read(str(path))["schema_version"] == 1
    result = compare.compare(schema.read(str(path)), document, 0.2)
    assert result.changes and not result.only_old


def test_schema_version_2_states_and_statuses():
    assert schema.SCHEMA_VERSION == 2 and schema.READABLE_VERSIONS == (1, 2)
    properties = schema.SCHEMA["properties"]
    assert properties["state"]["enum"] == ["running", "complete", "interrupted"]
    figure_status = properties["figures"]["items"]["properties"]["status"]["enum"]
    assert {"skipped", "failed"} <= set(figure_status)
    memory = {"structure": "token", "group": "token", "operation": "o", "subject": "s",
              "keys": 10, "python_bytes": None, "core_bytes": None, "total_bytes": None,
              "per": "key", "bytes_per_unit": None, "status": "skipped", "detail": "over cap"}
    validator = jsonschema.Draft202012Validator(properties["memory"]["items"])
    assert validator.is_valid(memory)
    assert not validator.is_valid(dict(memory, status="ok"))     # ok needs its byte counts


def test_row_cap_option(tmp_path):
    done = bench(tmp_path, "--row-cap", "-1", check_code=2)
    assert "--row-cap" in done.stderr
    help_text = bench(tmp_path, "--help", check_code=0).stdout
    assert "--row-cap SECONDS" in help_text and "4 a row failed" in help_text
    args = __import__("fastcore.__main__", fromlist=["parsers"]).parsers()[0].parse_args
    assert cli.settings_from(args(["bench", "--quick"])).row_cap == 5.0
    assert cli.settings_from(args(["bench", "--row-cap", "0"])).row_cap is None
    assert cli.settings_from(args(["bench", "--row-cap", "2.5"])).row_cap == 2.5


# --compare on a noisy machine: a model of the noise measured on this project's shared
# 2-vCPU machine. Between two --quick runs of one build there, a row's ns/op changed by a
# factor whose 5/25/50/75/95 % quantiles were 0.24/0.62/1.03/1.85/6.9; this model gives
# 0.17/0.53/0.96/1.79/5.9 (checked below). Its parts: a speed per structure and run, a
# persistent per-row factor for the run (cache pressure from neighbours), a burst of load on
# a whole row (a quarter of the rows, 1.5-8x), and preempted rounds within a row.

import math
import random
import statistics

HEAVY = dict(machine=0.25, persistent=0.35, burst_p=0.25, burst=(1.5, 8.0), jitter=0.08,
             preempt_p=0.25, preempt=(1.5, 4.0))
QUIET = dict(machine=0.05, persistent=0.03, burst_p=0.0, burst=(1.0, 1.0), jitter=0.02,
             preempt_p=0.05, preempt=(1.2, 2.0))


def _model_rows(rng):
    """Figures of five structures like the real ones: fastcore, floor and peer rows."""
    rows = []
    for structure in ("s0", "s1", "s2", "s3", "s4"):
        for group in range(6):
            ns = math.exp(rng.uniform(math.log(20), math.log(5000)))
            subjects = [("fastcore.A", "fastcore", ns),
                        ("fastcore.B", "fastcore", ns * rng.uniform(0.8, 1.5)),
                        ("peer", "peer", ns * rng.uniform(2, 50))]
            if group % 2 == 0:
                subjects.append(("floor", "floor", ns * rng.uniform(0.3, 1)))
            rows += [{"structure": structure, "operation": f"op{group}", "subject": subject,
                      "kind": kind, "keys": None, "batch": None, "threads": 1, "ns": cost}
                     for subject, kind, cost in subjects]
    return rows


def _rows_of(document):
    """The measured figures of a real run, their ns/op taken as the true cost."""
    return [dict({key: f[key] for key in ("structure", "operation", "subject", "kind", "keys",
                                          "batch", "threads")}, ns=f["median_ns"])
            for f in document["figures"] if f["status"] == "ok"]


def _key(row):
    return tuple(row[k] for k in ("structure", "operation", "subject", "keys", "batch",
                                  "threads"))


class _NoisyMachine:
    """One run's machine state; times rows like the harness (median of 21 rounds)."""

    def __init__(self, rng, rows, noise, slower=None):
        self.rng, self.noise, self.slower = rng, noise, slower or {}
        speed = {row["structure"]: math.exp(rng.gauss(0, noise["machine"])) for row in rows}
        self.state = {_key(row): speed[row["structure"]]
                      * math.exp(rng.gauss(0, noise["persistent"])) for row in rows}
        self.cost = {_key(row): row["ns"] for row in rows}

    def rounds(self, key):
        noise, rng = self.noise, self.rng
        ns = self.cost[key] * self.slower.get(key, 1.0) * self.state[key]
        if rng.random() < noise["burst_p"]:
            ns *= math.exp(rng.uniform(*map(math.log, noise["burst"])))
        samples = []
        for _ in range(21):
            sample = ns * (1 + abs(rng.gauss(0, noise["jitter"])))
            if rng.random() < noise["preempt_p"]:
                sample *= rng.uniform(*noise["preempt"])
            samples.append(sample)
        return samples

    def document(self, rows):
        figures = []
        for row in rows:
            samples = self.rounds(_key(row))
            q1, median, q3 = statistics.quantiles(samples, n=4)
            figure = {k: v for k, v in row.items() if k != "ns"}
            figure.update(status="ok", median_ns=median, q1_ns=q1, q3_ns=q3)
            figures.append(figure)
        return {"machine": {"cpu": "x"}, "settings": {"mode": "quick"}, "state": "complete",
                "figures": figures}

    def retime(self, plan, repeats=3):
        """What runner.retime answers on this machine, the run's state unchanged."""
        def once(identity):
            return statistics.median(self.rounds(identity))
        return {identity: [(once(identity), [(once(r) + once(r)) / 2 for r in references])
                           for _ in range(repeats)] for identity, references in plan}


def _compare_on(seed, noise, slower=None, rows=None):
    rng = random.Random(seed)
    rows = rows or _model_rows(random.Random(1))
    old = _NoisyMachine(rng, rows, noise).document(rows)
    machine = _NoisyMachine(rng, rows, noise, slower)
    new = machine.document(rows)
    result = compare.compare(old, new, 0.2)
    plan = compare.retime_plan(result, old, new)
    compare.apply_retimes(result, old, new, plan, machine.retime(plan))
    return result


def test_the_noise_model_is_as_noisy_as_the_machine_was():
    rows = _model_rows(random.Random(1))
    logs = []
    for seed in range(30):
        rng = random.Random(seed)
        first, second = (_NoisyMachine(rng, rows, HEAVY).document(rows) for _ in range(2))
        logs += [math.log(b["median_ns"] / a["median_ns"])
                 for a, b in zip(first["figures"], second["figures"])]
    logs.sort()
    quantile = [math.exp(logs[int(p * (len(logs) - 1))]) for p in (0.05, 0.25, 0.75, 0.95)]
    assert quantile[0] < 0.3 and quantile[1] < 0.65 and quantile[2] > 1.6 and quantile[3] > 4


def test_the_same_build_never_regresses_on_a_noisy_machine():
    for seed in range(300):
        result = _compare_on(seed, HEAVY)
        assert result.regressions == [], (seed, [c.identity for c in result.regressions])
        assert not result.overall_slower, (seed, result.overall)


def test_a_2x_slower_row_is_reported_on_a_quiet_machine():
    rows = _model_rows(random.Random(1))
    slowed = ("s2", "op3", "fastcore.A", None, None, 1)
    for seed in range(50):
        result = _compare_on(seed, QUIET, {slowed: 2.0})
        assert [c.identity for c in result.regressions] == [slowed], seed
        change = result.regressions[0]
        assert change.retimed and min(change.retimed) > 1.5
    everything = {_key(row): 2.0 for row in rows if row["kind"] == "fastcore"}
    for seed in range(50):
        assert _compare_on(seed, QUIET, everything).overall_slower, seed


def test_a_real_run_with_the_machine_noise_never_regresses_and_shows_a_2x(baseline):
    # The rows and costs of a real run (token buckets at 10 and 100 keys), two runs of them
    # drawn on the noisy machine model: never slower; the same with one fastcore row twice
    # as slow on a quiet machine: that row, and only it.
    _, document, _ = baseline
    rows = _rows_of(document)
    for seed in range(100):
        result = _compare_on(seed, HEAVY, rows=rows)
        assert result.regressions == [] and not result.overall_slower, seed
    slowed = next(_key(row) for row in rows if row["kind"] == "fastcore" and row["keys"])
    for seed in range(20):
        result = _compare_on(seed, QUIET, {slowed: 2.0}, rows=rows)
        assert [c.identity for c in result.regressions] == [slowed], seed


def test_compare_divides_by_the_floors_and_needs_the_spread():
    def doc(scale_floor, scale_row, spread=0.0):
        figures = []
        for name, kind, ns, scale in (("f1", "floor", 100.0, scale_floor),
                                      ("f2", "floor", 50.0, scale_floor),
                                      ("row", "fastcore", 200.0, scale_row)):
            median = ns * scale
            figures.append({"structure": "token", "operation": name, "subject": name,
                            "kind": kind, "keys": None, "batch": None, "threads": 1,
                            "status": "ok", "median_ns": median,
                            "q1_ns": median * (1 - spread), "q3_ns": median * (1 + spread)})
        return {"machine": {"cpu": "x"}, "settings": {"mode": "quick"}, "figures": figures}

    # the whole machine 1.5x slower: floors and row alike, nothing changed
    result = compare.compare(doc(1, 1), doc(1.5, 1.5), 0.2)
    assert result.speeds["token"] == (1.5, 2) and result.regressions == []
    assert "the floors ran 1.50x as long as before" in compare.render(result, "old.json")
    # the row 3x slower on a 1.5x slower machine: 2x beyond the machine
    result = compare.compare(doc(1, 1), doc(1.5, 4.5), 0.2)
    change = {c.identity[1]: c for c in result.changes}["row"]
    assert change.normalised == pytest.approx(3.0) and change.verdict == "SLOWER"
    # 30 % slower, but the rounds spread +-10 %: 1.3 * 0.9 < 1.1 * 1.2, within noise
    result = compare.compare(doc(1, 1, spread=0.1), doc(1, 1.3, spread=0.1), 0.2)
    change = {c.identity[1]: c for c in result.changes}["row"]
    assert not change.slower and change.verdict == "within noise"
    # floors never make a verdict
    result = compare.compare(doc(1, 1), doc(3, 1), 0.2)
    floors = [c for c in result.changes if c.kind == "floor"]
    assert all(not c.judged for c in floors) and result.regressions == []


SLOWED_WORKLOADS = '''
import os
from fastcore.benchmark.workload import Workload

N = 2000 * int(os.environ.get("FASTCORE_TEST_SLOWDOWN", "1"))

def _sum(n):
    numbers = range(n)
    return lambda: sum(numbers)

def workloads(keys, batch):
    return [
        Workload("fake", "sum", "fastcore.Sum", lambda: _sum(N), 1),
        Workload("fake", "sum", "floor: sum", lambda: _sum(2000), 1, kind="floor"),
        Workload("fake", "other", "fastcore.Other", lambda: _sum(500), 1),
    ]
'''


def test_rows_that_look_slower_are_timed_again_beside_their_floor(tmp_path, monkeypatch):
    # The mechanics, on real timings: which rows are re-timed, beside what, and how the
    # repetitions enter the verdict (the verdicts themselves are the model tests' business:
    # on a shared machine real timings are noise-bound).
    _fake_module(tmp_path, monkeypatch, "fake_slowed_bench", SLOWED_WORKLOADS)
    settings = _settings(structures=["fake_slowed_bench"], rounds=5, round_time=0.0005,
                         max_time=0.05)
    old = schema.to_document(runner.run(settings, progress.NullProgress()), ["t"])
    new = copy.deepcopy(old)
    for figure in new["figures"]:
        if figure["subject"] == "fastcore.Sum":       # looks 3x slower, beyond its spread
            for name in ("median_ns", "q1_ns", "q3_ns"):
                figure[name] *= 3
    result = compare.compare(old, new, 0.2)
    plan = compare.retime_plan(result, old, new)
    sum_row, floor = (("fake_slowed_bench", "sum", subject, None, None, 1)
                      for subject in ("fastcore.Sum", "floor: sum"))
    assert plan == [(sum_row, [floor])]               # only it, beside its group's floor
    monkeypatch.setenv("FASTCORE_TEST_SLOWDOWN", "2")
    monkeypatch.delitem(sys.modules, "fake_slowed_bench")   # the slower "build"
    results = runner.retime(settings, plan, 3)
    assert len(results[sum_row]) == 3
    for row_ns, (floor_ns,) in results[sum_row]:
        assert row_ns > 0 and floor_ns > 0
    compare.apply_retimes(result, old, new, plan, results)
    change = {c.identity: c for c in result.changes}[sum_row]
    old_cost = change.old_ns / {c.identity: c for c in result.changes}[floor].old_ns
    assert change.retimed == [pytest.approx(row / floor_ns / old_cost)
                              for row, (floor_ns,) in results[sum_row]]
    assert change.slower == (min(change.retimed) > 1.2
                             and min(change.retimed) > change.spread_now)
    text = compare.render(result, "old.json")
    assert "re-timed" in text and "not judged" not in text.split("fastcore.Sum")[1][:200]
    # rows timed from several threads are reported, not re-timed
    threaded = (sum_row[:5] + (2,), [floor])
    assert runner.retime(settings, [threaded], 1)[threaded[0]].startswith("rows timed from")


def test_two_real_runs_of_the_same_build_do_not_regress(baseline):
    folder, _, _ = baseline
    bench(folder, "--tiny", "--only", "token", "--keys", "10,100", "--memory-keys", "0",
          "--progress", "none", "--json", "again.json", check_code=0)
    done = bench(folder, "--tiny", "--only", "token", "--keys", "10,100", "--memory-keys",
                 "0", "--progress", "none", "--compare", "again.json", check_code=0)
    assert "fastcore rows: 0 slower beyond tolerance" in done.stdout


# The plot: one small panel per operation, at most fastcore, floor and the fastest peer.

def _report_of(document):
    """A runner.Report holding a --json document's figures (what plot.write draws)."""
    s = document["settings"]
    settings = runner.Settings(
        structures=s["structures"], keys=s["keys"], batch=s["batch"], rounds=s["rounds"],
        round_time=s["round_time_s"], max_time=s["max_time_s"], memory_keys=s["memory_keys"],
        mode=s["mode"], threads=s["threads"], peers=s["peers"], row_cap=s["row_cap_s"])
    return runner.Report(settings, document["machine"], document["versions"],
                         document["peers"], document["noise"], document["structures"],
                         [runner.Figure(**f) for f in document["figures"]],
                         [runner.MemoryFigure(**m) for m in document["memory"]], 0.0,
                         document["duration_s"], document["state"])


def test_plot_panels_hold_fastcore_the_floor_and_the_fastest_peer(peers_run, tmp_path):
    from fastcore.benchmark import plot
    _, document = peers_run
    drawn = plot.panels(_report_of(document))
    assert drawn["dots"], "the hot-key operations"
    ok = [f for f in document["figures"] if f["status"] == "ok"]
    for title, lines in drawn["keys"] + drawn["batch"] + drawn["dots"]:
        assert set(lines) <= {"fastcore", "floor", "peer"} and "fastcore" in lines, title
        if "peer" in lines:
            subject, figures = lines["peer"]
            group = {(f.operation, f.keys, f.batch) for f in figures}
            rivals = [f for f in ok if f["kind"] == "peer"
                      and (f["operation"], f["keys"], f["batch"]) in group]
            most = max(f["keys"] or 0 for f in rivals)
            fastest = min((f for f in rivals if (f["keys"] or 0) == most),
                          key=lambda f: f["median_ns"])
            assert subject == fastest["subject"], title
    path = tmp_path / "peers.png"
    plot.write(_report_of(document), str(path))
    width, height = png_size(path)
    assert width == 1440 and height < 1600          # 4 columns of 3.6 in at 100 dpi


def test_full_run_plot_is_a_few_panels_wide(full_run):
    _, document, path = full_run
    width, height = png_size(path)
    assert width == 1440 and 400 < height < 2400


def test_outputs_get_the_usual_file_permissions(full_run):
    # written through temporary files, but readable like a plain open() would make them
    _, _, png = full_run
    umask = os.umask(0)
    os.umask(umask)
    for path in (png, png.parent / "out.json"):
        assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask, path


def test_memory_builds_over_the_cap_are_skipped(tmp_path, monkeypatch):
    _fake_module(tmp_path, monkeypatch, "fake_memory_cap_bench", '''
import time
from fastcore.benchmark.workload import Workload

def _slow(keys):
    def setup():
        if keys and keys > 100:                       # only the memory pass builds this big
            end = time.monotonic() + 120
            while time.monotonic() < end:
                pass
        return lambda: None
    return setup

def workloads(keys, batch):
    return [Workload("cache", "fill", "fastcore.Slow", _slow(keys), 1, keys=keys,
                     memory=lambda run: 8),
            Workload("cache", "whole", "fastcore.Whole", _slow(None), 1,
                     memory=lambda run: 8)]
''')
    result = runner.run(_settings(structures=["fake_memory_cap_bench"], keys=[10],
                                  memory_keys=1000, row_cap=0.3), progress.NullProgress())
    by_subject = {m.subject: m for m in result.memory}
    slow = by_subject["fastcore.Slow"]
    assert (slow.status, slow.detail) == ("skipped", "over 0.3 s cap in setup (under "
                                                     "tracemalloc)")
    assert slow.total_bytes is None and slow.bytes_per_unit is None
    assert by_subject["fastcore.Whole"].status == "ok"
    text = report.render(result)
    assert "fake_memory_cap_bench memory / fastcore.Slow at 1,000 keys: skipped: over" in text
    jsonschema.validate(schema.to_document(result, ["t"]), schema.SCHEMA)


def test_plot_draws_the_largest_batch_against_keys_and_the_batches_apart():
    from fastcore.benchmark import plot
    figures = []
    for keys in (1000, 100_000):
        for batch in (64, 4096):        # spelled without a thousands comma, as token.py does
            for subject, kind, ns in (("fastcore.K", "fastcore", 5.0), ("floor: f", "floor", 2)):
                figures.append(runner.Figure(
                    "token", "token", f"acquire_many per decision (batch {batch})", subject,
                    kind, keys, batch, 1, batch, median_ns=ns * (1 + keys / 1e6)))
    result = runner.Report(_settings(keys=[1000, 100_000], batch=[64, 4096]), {}, {}, {}, {},
                           [], figures, [], 0.0, 1.0)
    drawn = plot.panels(result)
    assert [title for title, _ in drawn["keys"]] == [
        "token: acquire_many per decision (batch 4096)"]
    assert [title for title, _ in drawn["batch"]] == [
        "token: acquire_many per decision at 100,000 keys, by batch size B"]
    (_, lines), = drawn["batch"]
    assert [f.batch for f in lines["fastcore"][1]] == [64, 4096]
    assert [f.keys for f in lines["fastcore"][1]] == [100_000, 100_000]


def test_points_that_change_nothing_are_not_built_again(tmp_path, monkeypatch):
    # A module whose workloads ignore the batch size is asked once per key count; one that
    # ignores both once in all.
    _fake_module(tmp_path, monkeypatch, "fake_calls_bench", '''
from fastcore.benchmark.workload import Workload
CALLS = []

def workloads(keys, batch):
    CALLS.append((keys, batch))
    return [Workload("fake", "get", "fastcore.Get", lambda: (lambda: None), 1, keys=keys)]
''')
    _fake_module(tmp_path, monkeypatch, "fake_flat_bench", '''
from fastcore.benchmark.workload import Workload
CALLS = []

def workloads(keys, batch):
    CALLS.append((keys, batch))
    return [Workload("fake", "hot", "fastcore.Hot", lambda: (lambda: None), 1)]
''')
    result = runner.run(_settings(structures=["fake_calls_bench", "fake_flat_bench"],
                                  keys=[10, 20], batch=[1, 4, 16]), progress.NullProgress())
    import fake_calls_bench
    import fake_flat_bench
    assert fake_calls_bench.CALLS == [(10, 1), (20, 1)]
    assert fake_flat_bench.CALLS == [(10, 1)]
    assert [(f.subject, f.keys) for f in result.figures] == [
        ("fastcore.Get", 10), ("fastcore.Get", 20), ("fastcore.Hot", None)]
