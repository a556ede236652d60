"""tools/bench_kv_cache.py: runs on tiny settings, checks the cache's tokens, parses its flags.
(The figures themselves come from running it; a test never times anything.)"""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_tool():
    spec = importlib.util.spec_from_file_location("bench_kv_cache",
                                                  ROOT / "tools" / "bench_kv_cache.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_runs_and_reports_both_lengths():
    tool = load_tool()
    lines = []
    rows = tool.run(lengths=(3, 5), batch=2, repeats=1, print_fn=lines.append)
    assert [r["length"] for r in rows] == [3, 5] and all(r["batch"] == 2 for r in rows)
    for r in rows:
        assert r["cache_ms"] > 0 and r["no_cache_ms"] > 0 and r["encode_ms"] > 0
        assert r["speedup"] == r["no_cache_ms"] / r["cache_ms"]
    assert lines[0].split()[:2] == ["length", "batch"] and len(lines) == 3


def test_bench_command_line_parses():
    # the command the README prints
    args = load_tool().build_parser().parse_args(["--lengths", "16,64", "--batch", "64",
                                                  "--repeats", "5"])
    assert (args.lengths, args.batch, args.repeats, args.quick) == ("16,64", 64, 5, False)
