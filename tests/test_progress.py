"""Progress on a terminal is a bar; in a file or a pipe it is short plain lines."""

from __future__ import annotations

import io
import subprocess
import sys

from pipeline.progress import LineProgress, progress_bar


def test_plain_lines_are_periodic_and_short() -> None:
    out = io.StringIO()
    bar = LineProgress(total=1000, desc="train hog", unit="step", interval=0.0, file=out)
    for _ in range(1000):
        bar.update(1)
        bar.set_postfix(loss="0.0712")
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 1001  # interval 0: one per update, and the last one
    assert lines[-1].startswith("train hog: 1000/1000 steps (100%), ")
    assert lines[-1].endswith("loss=0.0712") and "\r" not in out.getvalue()
    assert max(len(line) for line in lines) < 120


def test_a_long_interval_writes_only_the_final_line() -> None:
    out = io.StringIO()
    with LineProgress(total=50, desc="extract hog", unit="shard", file=out) as bar:
        for _ in range(50):
            bar.update(1)
    assert out.getvalue().splitlines() == [out.getvalue().strip()]
    assert out.getvalue().startswith("extract hog: 50/50 shards (100%)")


def test_iterating_counts_every_item() -> None:
    out = io.StringIO()
    items = list(progress_bar(range(7), desc="export", unit="shard", force_lines=True, file=out))
    assert items == list(range(7))
    assert out.getvalue().startswith("export: 7/7 shards (100%)")


def test_a_pipe_gets_lines_not_carriage_returns() -> None:
    """The choice is made from stderr: a subprocess writing to a pipe gets plain lines."""
    code = (
        "from pipeline.progress import progress_bar\n"
        "bar = progress_bar(total=3, desc='demo', unit='step')\n"
        "for _ in range(3): bar.update(1)\n"
        "bar.close()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "\r" not in result.stderr
    assert result.stderr.strip() == result.stderr.strip().splitlines()[-1]
    assert result.stderr.startswith("demo: 3/3 steps (100%)")
