"""Every ```bash / ```python block of README.md and docs/**/*.md runs as written (tests/docs_harness.py).

One test per markdown file: ``test_docs_fast[FILE]`` runs its blocks not marked slow or skip, in order, in one fresh
directory outside the repository, with the venv first on PATH and only OFA_SMOKE=1 added; ``test_docs_slow[FILE]``
(``make test-slow``) runs all its unskipped blocks, fast and slow, in order. Both first check every block's markers
and syntax, skipped ones included.
"""

from __future__ import annotations

import pytest
from docs_harness import (
    REPO_ROOT,
    Block,
    DocsMarkerError,
    build_script,
    doc_files,
    parse_file,
    parse_markdown,
    run_blocks,
    syntax_errors,
)
from docs_standins import StandInUnavailable, make_stand_ins

FAST_TIMEOUT_S = 600
SLOW_TIMEOUT_S = 3600


def _collect():
    fast, slow = [], []
    for path in doc_files():
        rel = path.relative_to(REPO_ROOT).as_posix()
        fast.append(pytest.param(path, id=rel))
        try:
            if any(b.slow and not b.skip for b in parse_file(path)):
                slow.append(pytest.param(path, id=rel))
        except DocsMarkerError:
            pass  # the fast test reports it
    return fast, slow


FAST_FILES, SLOW_FILES = _collect()


@pytest.fixture(scope="session")
def stand_in_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("docs_standins")


def _checked_blocks(path) -> list[Block]:
    try:
        blocks = parse_file(path)
    except DocsMarkerError as exc:
        pytest.fail(str(exc), pytrace=False)
    errors = syntax_errors(blocks)
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)
    return blocks


def _run(blocks: list[Block], tmp_path, cache, timeout: float) -> None:
    assert REPO_ROOT not in tmp_path.resolve().parents, f"{tmp_path} is inside the repository"
    work = tmp_path / "work"
    work.mkdir()
    try:
        make_stand_ins({n for b in blocks for n in b.needs}, work, cache)
    except StandInUnavailable as exc:
        pytest.skip(f"stand-in unavailable: {exc}")
    result = run_blocks(blocks, work, tmp_path / "harness", timeout)
    if result.returncode or result.timed_out:
        pytest.fail(result.message(), pytrace=False)


@pytest.mark.parametrize("path", FAST_FILES)
def test_docs_fast(path, tmp_path, stand_in_cache):
    blocks = [b for b in _checked_blocks(path) if not b.slow and not b.skip]
    if blocks:
        _run(blocks, tmp_path, stand_in_cache, FAST_TIMEOUT_S)


@pytest.mark.slow
@pytest.mark.parametrize("path", SLOW_FILES)
def test_docs_slow(path, tmp_path, stand_in_cache):
    blocks = [b for b in _checked_blocks(path) if not b.skip]
    _run(blocks, tmp_path, stand_in_cache, SLOW_TIMEOUT_S)


# --- the harness itself ---------------------------------------------------------------------------------------

SAMPLE = """\
# Title
<!-- docs-test: file: slow -->
Some `<!-- docs-test: slow -->` prose.

```bash
echo one
```

```text
not run
```

<!-- docs-test: needs: ofa_bpe, photos -->
```python
print("two")
```

<!-- docs-test: skip: needs a SLURM cluster -->
```bash
sbatch job.sh
```

1. In a list:

   ```bash
   echo three
   ```

````markdown
```bash
echo inside a four-tick fence
```
<!-- docs-test: nonsense -->
````
"""


def test_parser_reads_blocks_markers_and_order():
    blocks = parse_markdown(SAMPLE, "doc.md")
    assert [(b.line, b.lang, b.code) for b in blocks] == [
        (5, "bash", "echo one\n"),
        (14, "python", 'print("two")\n'),
        (19, "bash", "sbatch job.sh\n"),
        (25, "bash", "echo three\n"),
    ]
    assert all(b.slow for b in blocks)  # the file marker
    assert blocks[1].needs == ("ofa_bpe", "photos") and blocks[2].skip == "needs a SLURM cluster"
    assert blocks[0].needs == () and blocks[0].skip is None and blocks[1].where == "doc.md:14"
    plain = parse_markdown("<!-- docs-test: slow -->\n```bash\nsleep 1\n```\n```python\npass\n```\n", "b.md")
    assert [b.slow for b in plain] == [True, False]


@pytest.mark.parametrize(
    "text, error",
    [
        ("<!-- docs-test: skip -->\n```bash\nx\n```\n", "needs a reason"),
        ("<!-- docs-test: skip:   -->\n```bash\nx\n```\n", "needs a reason"),
        ("<!-- docs-test: fast -->\n```bash\nx\n```\n", "unknown docs-test marker 'fast'"),
        ("<!-- docs-test: needs: gpu -->\n```bash\nx\n```\n", "unknown stand-in gpu"),
        ("<!-- docs-test slow -->\n```bash\nx\n```\n", "malformed docs-test marker"),
        ("<!-- docs-test: slow -->\n\n```bash\nx\n```\n", "followed by a blank line"),
        ("<!-- docs-test: slow -->\nprose\n```bash\nx\n```\n", "not directly before a fence"),
        ("<!-- docs-test: slow -->\n```text\nx\n```\n", "before a ```text fence"),
        ("text\n<!-- docs-test: slow -->\n", "end of the file"),
        ("```sh\nls\n```\n", "write ```bash"),
    ],
)
def test_parser_refuses_bad_markers(text, error):
    with pytest.raises(DocsMarkerError, match=error) as info:
        parse_markdown(text, "bad.md")
    assert "bad.md:" in str(info.value)


def test_runner_points_at_the_failing_block(tmp_path, monkeypatch):
    monkeypatch.setenv("OFA_BPE_DIR", "/somewhere")
    blocks = parse_markdown(
        "```bash\necho made > state.txt\nexport FROM_FIRST=1\n```\n"
        "```python\nimport os, pathlib\nassert pathlib.Path('state.txt').read_text() == 'made\\n'\n"
        "assert os.environ['FROM_FIRST'] == '1' and os.environ['OFA_SMOKE'] == '1'\n"
        "assert 'OFA_BPE_DIR' not in os.environ\n```\n"
        "```bash\necho before-failure\nfalse\necho never\n```\n```bash\necho unreachable\n```\n",
        "t.md",
    )
    work = tmp_path / "work"
    work.mkdir()
    result = run_blocks(blocks, work, tmp_path / "harness", timeout=120)
    assert result.returncode != 0 and result.failed_block is blocks[2]
    msg = result.message()
    assert "t.md:11 (bash) exited with status 1" in msg and "before-failure" in msg
    assert "never" not in result.output and "unreachable" not in result.output
    assert syntax_errors(parse_markdown("```bash\nls\nif then\n```\n```python\ndef (\n```\n", "s.md")) == [
        "s.md:3: bash syntax error: syntax error near unexpected token `then'",
        "s.md:6: python syntax error: invalid syntax",
    ]
    assert set(result.seconds) == {"t.md:1", "t.md:5", "t.md:11"} and all(t >= 0 for t in result.seconds.values())
    assert "set -euo pipefail" in build_script(blocks, tmp_path / "state")
