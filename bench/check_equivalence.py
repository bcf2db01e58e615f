"""Old against new quote splitting: the same input must give the same output (run by hand).

Loads the conversation package twice: the baseline from another checkout's `src` (for
example `git archive main | tar -x -C /tmp/base`) and the current one from this tree, runs
both over the same inputs and prints how many outputs differ (0 means nothing changed):

    .venv/bin/python bench/check_equivalence.py /tmp/base/src [--n 5000] [--fuzz 20000]

Inputs: every .eml under tests/fixtures/emails and /work/shared/corpus (when present), the
hand-written replies in tests/fixtures/replies, the `bench/mailmix.py` support mix, and
`--fuzz` messages built from random lines of all of those (with random quote prefixes,
blank lines and wrapping), which reach line combinations no fixture has, and a quarter as
many HTML bodies of those lines in randomly nested (and broken) client markup. Each message is
split as the pipeline splits it (text part and HTML part), and also by each part alone;
`html_lines` and `text_lines` are compared line by line.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path("/work/shared/corpus")


def _load(src: Path | None) -> dict[str, ModuleType]:
    """Import mailticket.conversation from `src` (None: this tree), then forget it, so the
    next load imports fresh modules; the returned functions keep their own globals."""
    for name in [m for m in sys.modules if m == "mailticket" or m.startswith("mailticket.")]:
        del sys.modules[name]
    if src is not None:
        sys.path.insert(0, str(src))
    try:
        import mailticket.conversation.html as html
        import mailticket.conversation.lines as lines
        import mailticket.conversation.quotes as quotes

        if src is not None and not quotes.__file__.startswith(str(src)):  # type: ignore[operator]
            raise SystemExit(f"baseline not loaded from {src}: got {quotes.__file__}")
        return {"quotes": quotes, "html": html, "lines": lines}
    finally:
        if src is not None:
            sys.path.remove(str(src))
            for name in [m for m in sys.modules if m == "mailticket" or m.startswith("mailticket.")]:
                del sys.modules[name]


def _parts(p: Any) -> tuple[Any, ...]:
    return (p.new_text, p.quoted_text, p.signature, p.method, p.source, p.forwarded)


def _lines(lines: list[Any]) -> list[tuple[Any, ...]]:
    return [(ln.raw, ln.text, ln.depth, ln.mark.value, ln.evidence) for ln in lines]


def _emails(paths: list[Path]) -> Iterator[tuple[str, str | None, str | None, str]]:
    from mailticket.reading.parsing import parse_email

    for path in paths:
        try:
            email = parse_email(path.read_bytes())
        except Exception:  # noqa: BLE001 - a file the parser refuses has nothing to split
            continue
        plain = email.text if "text/plain" in email.part_types else None
        yield str(path), plain, email.html, email.text


def _mix(n: int) -> Iterator[tuple[str, str | None, str | None, str]]:
    from mailticket.reading.parsing import parse_email

    sys.path.insert(0, str(ROOT / "bench"))
    from mailmix import generate_mix

    for i, raw in enumerate(generate_mix(n, 1)):
        email = parse_email(raw)
        plain = email.text if "text/plain" in email.part_types else None
        yield f"mix#{i}", plain, email.html, email.text


def _replies() -> Iterator[tuple[str, str | None, str | None, str]]:
    for path in sorted((ROOT / "tests/fixtures/replies").glob("*.yaml")):
        for case in yaml.safe_load(path.read_text())["cases"]:
            text, html = case.get("text"), case.get("html")
            yield f"{path.name}:{case['id']}", text, html, text or ""


def _fuzz(pool: list[str], count: int, seed: int) -> Iterator[tuple[str, str | None, str | None, str]]:
    rng = random.Random(seed)
    for i in range(count):
        out: list[str] = []
        for _ in range(rng.randint(1, 40)):
            line = rng.choice(pool)
            r = rng.random()
            if r < 0.25:
                line = ">" * rng.randint(1, 3) + rng.choice(("", " ")) + line
            elif r < 0.35:
                line = ""
            elif r < 0.4 and len(line) > 20:  # a client's wrapping
                cut = rng.randint(5, len(line) - 5)
                out.append(line[:cut])
                line = line[cut:]
            out.append(line)
        text = "\n".join(out)
        yield f"fuzz#{i}", text, None, text


# Openings the HTML walker treats specially, to nest at random (unclosed, self-closed and
# stray end tags included: mail HTML is often broken).
_TAGS = [
    "<div>", "<p>", "<br>", "<pre>", "<blockquote>", '<blockquote type="cite">', "<span>",
    '<div class="gmail_quote">', '<div class="gmail_attr">', '<div class="moz-cite-prefix">',
    '<div class="gmail_signature">', '<div id="divRplyFwdMsg">', '<hr id="stopSpelling">',
    '<div style="border-top:solid #E1E1E1 1.0pt;padding:3.0pt 0in 0in 0in">', "<table><tr><td>",
    '<span style="display: none">', "<script>", "<style>", '<div class="yahoo_quoted">',
    '<div id="Signature">', "<div/>", "<hr>", "<li>",
]


def _html_fuzz(pool: list[str], count: int, seed: int) -> Iterator[tuple[str, str | None, str | None, str]]:
    rng = random.Random(seed)
    for i in range(count):
        out: list[str] = []
        open_tags: list[str] = []
        for _ in range(rng.randint(1, 40)):
            r = rng.random()
            if r < 0.35:
                tag = rng.choice(_TAGS)
                out.append(tag)
                name = tag[1:].split(">")[0].split()[0].rstrip("/")
                if not tag.endswith("/>") and name not in ("br", "hr"):
                    open_tags.append(name)
            elif r < 0.55 and open_tags:
                out.append(f"</{open_tags.pop(rng.randrange(len(open_tags)))}>")
            elif r < 0.6:
                out.append(rng.choice(["</div>", "</p>", "</blockquote>", "</span>"]))
            else:
                out.append(rng.choice(pool).replace("<", "&lt;") + rng.choice(["", "\n"]))
        html = "".join(out)
        yield f"html-fuzz#{i}", None, html, ""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("baseline_src", type=Path, help="the baseline checkout's src directory")
    ap.add_argument("--n", type=int, default=5000, help="messages of the support mix")
    ap.add_argument("--fuzz", type=int, default=20000, help="messages of random lines")
    ap.add_argument("--show", type=int, default=5, help="differences to print")
    args = ap.parse_args()

    old = _load(args.baseline_src.resolve())
    new = _load(None)
    sys.path.insert(0, str(ROOT / "src"))

    emails = sorted((ROOT / "tests/fixtures/emails").rglob("*.eml"))
    if CORPUS.is_dir():
        emails += sorted(CORPUS.rglob("*.eml"))
    inputs = [*_emails(emails), *_replies(), *_mix(args.n)]
    pool = sorted({ln for _, t, _, full in inputs for ln in (t or full).splitlines()})
    inputs += list(_fuzz(pool, args.fuzz, 1))
    inputs += list(_html_fuzz(pool, args.fuzz // 4, 2))

    checks: list[tuple[str, Callable[[Any, str | None, str | None, str], Any]]] = [
        ("split_reply(text, html)", lambda m, t, h, _f: _parts(m["quotes"].split_reply(t, h))),
        ("split_reply(text, None)", lambda m, _t, _h, f: _parts(m["quotes"].split_reply(f, None))),
        ("split_reply(None, html)", lambda m, _t, h, _f: _parts(m["quotes"].split_reply(None, h))),
        ("html_lines(html)", lambda m, _t, h, _f: _lines(m["html"].html_lines(h)) if h else None),
        ("html_to_plain(html)", lambda m, _t, h, _f: m["html"].html_to_plain(h) if h else None),
        ("text_lines(text)", lambda m, _t, _h, f: _lines(m["lines"].text_lines(f))),
    ]
    differing = 0
    shown = 0
    compared = 0
    methods: Counter[str] = Counter()  # which rules the inputs reached, to judge the coverage
    for name, text, html, full in inputs:
        for label, run in checks:
            compared += 1
            a, b = run(old, text, html, full), run(new, text, html, full)
            if label.startswith("split_reply"):
                methods[b[3]] += 1
            if a != b:
                differing += 1
                if shown < args.show:
                    shown += 1
                    print(f"DIFF {label} on {name}:\n  old {a!r}\n  new {b!r}")
    kinds = {"mail": len(emails), "mix": args.n, "fuzz": args.fuzz, "html fuzz": args.fuzz // 4}
    print(f"inputs: {len(inputs):,} ({kinds}, replies fixtures), outputs compared: {compared:,}")
    print("split methods reached:", dict(methods.most_common()))
    print(f"differing outputs: {differing}")
    sys.exit(1 if differing else 0)


if __name__ == "__main__":
    main()
