"""Run the commands of README.md and docs/**/*.md as written: parse the fenced blocks and their markers, build one
bash script per markdown file, run it in a fresh directory outside the repository and point at the failing block.

Markers (an HTML comment on the line(s) right before a fence; a ``file:`` marker may stand anywhere):

    <!-- docs-test: slow -->                  run only under ``make test-slow``
    <!-- docs-test: skip: <reason> -->        never run (the reason is required)
    <!-- docs-test: needs: NAME[, NAME] -->   create these stand-ins first (tests/docs_standins.py)
    <!-- docs-test: file: slow -->            every block of the file is slow

```bash and ```python blocks run; ```sh / ```shell / ```zsh / ```py / ```python3 are refused (write ```bash,
```python or ```text); every other language (```text, ```console, ```yaml, ...) and a bare fence is shown text.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from docs_standins import REPO_ROOT, STAND_INS

RUN_LANGS = ("bash", "python")
REFUSED_LANGS = {"sh": "bash", "shell": "bash", "zsh": "bash", "py": "python", "python3": "python"}
# Variables that make a run differ from a user's: the test session's own settings, path overrides.
UNSET_PREFIXES = ("OFA_", "WANDB_", "PYTEST_")
UNSET_NAMES = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")
SMOKE_ENV = {"OFA_SMOKE": "1"}
TAIL_LINES = 60

_FENCE = re.compile(r"^(?P<indent> {0,12})(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)[^`]*$")
_MARKER = re.compile(r"^\s*<!--\s*docs-test\s*:(?P<body>.*?)-->\s*$")
_MARKER_LIKE = re.compile(r"^\s*<!--\s*docs-test", re.IGNORECASE)


class DocsMarkerError(ValueError):
    """A malformed docs-test marker or a refused fence language; the message names file:line."""


@dataclass
class Block:
    path: str  # as shown in messages, e.g. docs/tutorials/finetune.md
    line: int  # 1-based line of the opening fence
    lang: str  # bash | python
    code: str
    slow: bool = False
    skip: str | None = None  # the reason, when skipped
    needs: tuple[str, ...] = ()

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass
class _Pending:
    slow: bool = False
    skip: str | None = None
    needs: list[str] = field(default_factory=list)
    line: int = 0


def _parse_marker(body: str, where: str, pending: _Pending) -> bool:
    """Apply one marker to ``pending``; returns True for the file-level ``file: slow``."""
    key, sep, value = body.strip().partition(":")
    key, value = key.strip(), value.strip()
    if key == "slow" and not sep:
        pending.slow = True
    elif key == "skip":
        if not value:
            raise DocsMarkerError(f"{where}: 'docs-test: skip' needs a reason: <!-- docs-test: skip: why -->")
        pending.skip = value
    elif key == "needs":
        names = [n.strip() for n in value.split(",") if n.strip()]
        unknown = [n for n in names if n not in STAND_INS]
        if not names or unknown:
            raise DocsMarkerError(
                f"{where}: unknown stand-in {', '.join(unknown) or '(none given)'}; "
                f"known: {', '.join(sorted(STAND_INS))}"
            )
        pending.needs.extend(names)
    elif key == "file" and value == "slow":
        return True
    else:
        raise DocsMarkerError(
            f"{where}: unknown docs-test marker {body.strip()!r}; known: slow, skip: <reason>, "
            f"needs: <{'|'.join(sorted(STAND_INS))}>, file: slow"
        )
    return False


def parse_markdown(text: str, path: str) -> list[Block]:
    """Every ```bash / ```python block of one markdown text, in order, with its markers applied."""
    blocks: list[Block] = []
    pending: _Pending | None = None
    file_slow = False
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line, lineno = lines[i], i + 1
        fence = _FENCE.match(line)
        marker = _MARKER.match(line)
        if marker:
            pending = pending or _Pending()
            pending.line = lineno
            file_slow |= _parse_marker(marker.group("body"), f"{path}:{lineno}", pending)
            if file_slow and not (pending.slow or pending.skip or pending.needs):
                pending = None  # the file marker applies to no single block
            i += 1
            continue
        if _MARKER_LIKE.search(line):
            raise DocsMarkerError(
                f"{path}:{lineno}: malformed docs-test marker {line.strip()!r}; "
                "write <!-- docs-test: slow --> (one marker per line, alone on it)"
            )
        if not fence:
            if pending is not None and line.strip():
                raise DocsMarkerError(f"{path}:{pending.line}: docs-test marker is not directly before a fence")
            if pending is not None:
                raise DocsMarkerError(
                    f"{path}:{pending.line}: docs-test marker is followed by a blank line, not by a fence"
                )
            i += 1
            continue
        # an opening fence: find its end (same character, at least as long)
        indent, ticks, lang = fence.group("indent"), fence.group("fence"), fence.group("info").lower()
        end = i + 1
        closing = re.compile(rf"^ {{0,{len(indent) + 3}}}{re.escape(ticks[0])}{{{len(ticks)},}}\s*$")
        while end < len(lines) and not closing.match(lines[end]):
            end += 1
        body = [ln[len(indent) :] if ln.startswith(indent) else ln.lstrip(" ") for ln in lines[i + 1 : end]]
        if lang in REFUSED_LANGS:
            raise DocsMarkerError(
                f"{path}:{lineno}: fence language '{lang}' is not run by the docs test; write "
                f"```{REFUSED_LANGS[lang]} (run) or ```text (shown only)"
            )
        if lang in RUN_LANGS:
            p = pending or _Pending()
            blocks.append(
                Block(
                    path,
                    lineno,
                    lang,
                    "\n".join(body) + "\n",
                    slow=p.slow,
                    skip=p.skip,
                    needs=tuple(dict.fromkeys(p.needs)),
                )
            )
        elif pending is not None:
            raise DocsMarkerError(
                f"{path}:{pending.line}: docs-test marker before a ```{lang or ''} fence, "
                "which is not run (only ```bash and ```python are)"
            )
        pending = None
        i = end + 1
    if pending is not None:
        raise DocsMarkerError(f"{path}:{pending.line}: docs-test marker at the end of the file, before no fence")
    if file_slow:
        for b in blocks:
            b.slow = True
    return blocks


def doc_files(root: Path = REPO_ROOT) -> list[Path]:
    """README.md and docs/**/*.md, README first, then by path."""
    files = [root / "README.md"] if (root / "README.md").is_file() else []
    return files + sorted((root / "docs").rglob("*.md"))


def parse_file(path: Path, root: Path = REPO_ROOT) -> list[Block]:
    return parse_markdown(path.read_text(encoding="utf-8"), path.relative_to(root).as_posix())


def syntax_errors(blocks: list[Block]) -> list[str]:
    """``bash -n`` / ``compile`` every block (slow and skipped ones too): a typo fails even where nothing runs.
    Each error names the markdown line it is on."""
    errors = []
    for b in blocks:
        if b.lang == "python":
            try:
                compile(b.code, b.where, "exec")
            except SyntaxError as exc:
                errors.append(f"{b.path}:{b.line + (exc.lineno or 1)}: python syntax error: {exc.msg}")
        else:
            res = subprocess.run(["bash", "-n"], input=b.code, text=True, capture_output=True)
            if res.returncode:
                first = res.stderr.strip().splitlines()[0]
                n = re.search(r"line (\d+): ", first)
                errors.append(
                    f"{b.path}:{b.line + int(n.group(1)) if n else b.line}: bash syntax error: "
                    f"{first[n.end() :] if n else first}"
                )
    return errors


PY_EOF = "__OFA_DOCS_TEST_PYTHON_BLOCK__"


def build_script(blocks: list[Block], state_file: Path, python: str = sys.executable) -> str:
    """One bash script: each block announced by its file:line on the output and, with its start time, in
    ``state_file``; python blocks fed to the venv's python on stdin (as in a REPL, the working directory is
    importable)."""
    out = ["set -euo pipefail"]
    for b in blocks:
        out.append(f"printf '%s %s\\n' {shlex.quote(b.where)} \"$(date +%s.%N)\" >> {shlex.quote(str(state_file))}")
        out.append(f"printf '\\n>>> docs-test %s (%s)\\n' {shlex.quote(b.where)} {b.lang}")
        if b.lang == "python":
            if PY_EOF in b.code:
                raise DocsMarkerError(f"{b.where}: python block contains the harness's delimiter {PY_EOF}")
            out.append(f"{shlex.quote(python)} - <<'{PY_EOF}'\n{b.code.rstrip()}\n{PY_EOF}")
        else:
            out.append(b.code.rstrip())
    out.append(f"printf '%s %s\\n' done \"$(date +%s.%N)\" >> {shlex.quote(str(state_file))}")
    return "\n".join(out) + "\n"


def user_env(python: str = sys.executable) -> dict[str, str]:
    """The test process's environment as a user's shell would have it: the venv's bin first on PATH, no OFA_* /
    WANDB_* / PYTEST_* / PYTHONPATH settings, plus only OFA_SMOKE=1."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(UNSET_PREFIXES) and k not in UNSET_NAMES}
    env["PATH"] = os.pathsep.join([str(Path(python).parent), env.get("PATH", "")])
    env.update(SMOKE_ENV)
    return env


@dataclass
class RunResult:
    returncode: int
    failed_block: Block | None
    output: str
    timed_out: bool = False
    seconds: dict[str, float] = field(default_factory=dict)  # file:line -> wall time of each block that ran

    def tail(self, n: int = TAIL_LINES) -> str:
        return "\n".join(self.output.splitlines()[-n:])

    def message(self) -> str:
        b = self.failed_block
        head = (
            f"timed out in {b.where}"
            if self.timed_out and b
            else f"{b.where} ({b.lang}) exited with status {self.returncode}"
            if b
            else f"docs script failed outside any block (status {self.returncode})"
        )
        code = f"\n--- block ---\n{b.code.rstrip()}" if b else ""
        if b and b.lang == "python":
            code += f"\n(python's '<stdin>', line N is {b.path}:{b.line}+N)"
        return f"{head}{code}\n--- last {TAIL_LINES} lines of output ---\n{self.tail()}"


def run_blocks(blocks: list[Block], workdir: Path, harness_dir: Path, timeout: float) -> RunResult:
    """Run ``blocks`` in order as one bash script with ``workdir`` as the working directory."""
    harness_dir.mkdir(parents=True, exist_ok=True)
    state, log, script = harness_dir / "block_starts", harness_dir / "output.log", harness_dir / "docs.sh"
    script.write_text(build_script(blocks, state))
    timed_out = False
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["bash", str(script)],
            cwd=workdir,
            env=user_env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            rc = proc.wait()
    marks = [ln.rsplit(" ", 1) for ln in state.read_text().splitlines()] if state.is_file() else []
    seconds = {w: float(t1) - float(t0) for (w, t0), (_, t1) in zip(marks, marks[1:])}
    if marks and marks[-1][0] != "done":
        seconds[marks[-1][0]] = time.time() - float(marks[-1][1])
    where = marks[-1][0] if marks else ""
    failed = next((b for b in blocks if b.where == where), None) if (rc or timed_out) else None
    return RunResult(rc, failed, log.read_text(errors="replace"), timed_out, seconds)


def run_keep_going(blocks: list[Block], workdir: Path, harness_dir: Path, timeout: float) -> list[RunResult]:
    """Run all ``blocks``; after a failure go on with the next block in the same directory (files made so far are
    kept; variables exported by earlier blocks are not). One result per failure, the last one the final run."""
    results = []
    while blocks:
        result = run_blocks(blocks, workdir, harness_dir / str(len(results)), timeout)
        results.append(result)
        if result.failed_block is None:
            break
        blocks = blocks[blocks.index(result.failed_block) + 1 :]
    return results


def main(argv: list[str] | None = None) -> int:
    """``python tests/docs_harness.py [--slow] [FILE ...]``: run the docs as the tests do, but go on past a
    failure; print every failing block and each block's time."""
    import argparse
    import tempfile

    from docs_standins import StandInUnavailable, make_stand_ins

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("files", nargs="*", type=Path, help="markdown files (default: README.md and docs/)")
    parser.add_argument("--slow", action="store_true", help="also run the blocks marked slow")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per run of a file's blocks")
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)
    failures = 0
    with tempfile.TemporaryDirectory(prefix="ofa-docs-") as tmp:
        cache = Path(tmp) / "standins"
        for n, path in enumerate(args.files or doc_files()):
            path = path.resolve()
            try:
                blocks = parse_file(path)
            except DocsMarkerError as exc:
                print(f"FAIL {exc}")
                failures += 1
                continue
            for err in syntax_errors(blocks):
                print(f"FAIL {err}")
                failures += 1
            run = [b for b in blocks if not b.skip and (args.slow or not b.slow)]
            work = Path(tmp) / f"file{n}" / "work"
            work.mkdir(parents=True)
            try:
                make_stand_ins({x for b in run for x in b.needs}, work, cache)
            except StandInUnavailable as exc:
                print(f"SKIP {path.name}: {exc}")
                continue
            for result in run_keep_going(run, work, work.parent / "harness", args.timeout):
                for where, secs in result.seconds.items():
                    print(
                        f"{'FAIL' if result.failed_block and result.failed_block.where == where else 'ok  '} "
                        f"{where} {secs:6.1f} s"
                    )
                if result.failed_block is not None:
                    failures += 1
                    print(result.message().replace("\n", "\n    "))
            for b in blocks:
                if b.skip or (b.slow and not args.slow):
                    print(f"skip {b.where} ({'skip: ' + b.skip if b.skip else 'slow'})")
    print(f"{failures} failing block(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
