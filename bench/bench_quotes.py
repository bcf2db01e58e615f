"""Quote stripping: ours against the reply-parsing libraries, on their own fixtures and ours.

Run by hand (figures, not a test):

    python bench/bench_quotes.py [--cache /work/cache/quotes/published] [--details]

Sources:
- the fixture sets the libraries publish (talon's, quotequail's, mail-parser-reply's,
  email_reply_parser's), prepared outside the repo in the cache folder (their licences allow
  it, but we do not ship them): `lib_sets.json` holds the cases extracted from talon's and
  quotequail's test suites with the libraries' own expected outputs (which keep the
  signature), `text_sets.json` the mail-parser-reply / email_reply_parser fixture files with
  the new text labelled by hand (signature stripped);
- our held-out set, tests/fixtures/replies/*.yaml, written for this benchmark: `dev` cases
  were written before and during the implementation and seen while tuning it; `frozen`
  cases were written after the implementation was frozen and never tuned on.

Each tool runs on the text part when there is one (the libraries are text parsers) and on
the HTML otherwise; ours gets both parts. Libraries that are not installed are skipped.

Metrics per case, whitespace-normalised:
- exact: the output is exactly the expected new text;
- leak: the output holds a line that is not in the expected text (quoted or signature lines
  left in);
- loss: a line of the expected text is missing from the output (the customer's words lost).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from mailticket.conversation import split_reply  # noqa: E402
from mailticket.conversation.html import html_to_plain  # noqa: E402

LANGS = ["en", "da", "de", "fr", "es", "nl", "sv", "no", "fi", "pl", "it", "pt", "ja", "zh"]


@dataclass(frozen=True)
class Case:
    source: str
    id: str
    lang: str
    text: str | None
    html: str | None
    expected: str
    keeps_signature: bool  # the label keeps the signature (talon's and quotequail's own labels)


# A tool returns (new text without signature, new text with signature).
Tool = Callable[[str | None, str | None], tuple[str, str]]


def _plain(text: str | None, html: str | None) -> str:
    return text if text and text.strip() else html_to_plain(html or "")


def ours(text: str | None, html: str | None) -> tuple[str, str]:
    p = split_reply(text, html)
    return p.new_text, p.body_with_signature


def _tools() -> dict[str, Tool]:
    tools: dict[str, Tool] = {"ours": ours}
    try:
        import quotequail

        def qq(text: str | None, html: str | None) -> tuple[str, str]:
            if text and text.strip():
                out = quotequail.quote(text, quote_intro_line=True)[0][1]
            else:
                out = html_to_plain(quotequail.quote_html(html or "", quote_intro_line=True)[0][1])
            return out, out  # quotequail does not look for signatures

        tools["quotequail"] = qq
    except ImportError:
        pass
    try:
        from mailparser_reply import EmailMessage
        from mailparser_reply.constants import MAIL_LANGUAGES

        langs = [k for k in MAIL_LANGUAGES if k != "david"]

        def mpr(text: str | None, html: str | None) -> tuple[str, str]:
            msg = EmailMessage(text=_plain(text, html), languages=list(langs)).read()
            if not msg.replies:
                return "", ""
            r = msg.replies[0]
            return r.body, r.full_body

        tools["mail-parser-reply"] = mpr
    except ImportError:
        pass
    try:
        from email_reply_parser import EmailReplyParser

        def erp(text: str | None, html: str | None) -> tuple[str, str]:
            msg = EmailReplyParser.read(_plain(text, html))
            with_sig: list[str] = []
            for f in msg.fragments:
                if f.quoted or f.headers:
                    break
                with_sig.append(f.content)
            return msg.reply, "\n".join(with_sig)

        tools["email-reply-parser"] = erp
    except ImportError:
        pass
    try:
        import talon
        from talon import quotations
        from talon.signature.bruteforce import extract_signature

        talon.init()

        def tal(text: str | None, html: str | None) -> tuple[str, str]:
            if text and text.strip():
                out = quotations.extract_from_plain(text)
            else:
                out = html_to_plain(quotations.extract_from_html(html or ""))
            body, _sig = extract_signature(out)
            return body, out

        tools["talon"] = tal
    except ImportError:
        pass
    return tools


# -- metrics ----------------------------------------------------------------------------------------
def _norm_line(s: str) -> str:
    return " ".join(s.replace("\u00a0", " ").split())


def _norm(s: str) -> str:
    return _norm_line(s)


def score(expected: str, got: str) -> tuple[bool, bool, bool]:
    exp_all, got_all = _norm(expected), _norm(got)
    exact = exp_all == got_all
    exp_lines = [_norm_line(x) for x in expected.splitlines() if x.strip()]
    got_lines = [_norm_line(x) for x in got.splitlines() if x.strip()]
    leak = any(g not in exp_all for g in got_lines)
    loss = any(e not in got_all for e in exp_lines)
    return exact, leak, loss


# -- data -------------------------------------------------------------------------------------------
def load_published(cache: Path) -> list[Case]:
    cases: list[Case] = []
    for name in ("lib_sets.json", "text_sets.json"):
        path = cache / name
        if not path.exists():
            print(f"(missing {path}: published fixtures skipped)", file=sys.stderr)
            continue
        for c in json.loads(path.read_text(encoding="utf-8")):
            cases.append(
                Case(
                    c["source"],
                    c["id"],
                    c["lang"],
                    c["text"],
                    c["html"],
                    c["expected"],
                    c["keeps_signature"],
                )
            )
    return cases


def load_heldout(folder: Path) -> list[Case]:
    cases: list[Case] = []
    for path in sorted(folder.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        part = doc.get("part", "dev")
        for c in doc["cases"]:
            cases.append(
                Case(
                    f"held-out:{part}",
                    c["id"],
                    c["lang"],
                    c.get("text"),
                    c.get("html"),
                    c["expected"].strip(),
                    False,
                )
            )
    return cases


# -- report -----------------------------------------------------------------------------------------
def run(cases: list[Case], tools: dict[str, Tool]) -> dict[str, dict[str, tuple[bool, bool, bool]]]:
    results: dict[str, dict[str, tuple[bool, bool, bool]]] = defaultdict(dict)
    for name, tool in tools.items():
        for c in cases:
            try:
                body, with_sig = tool(c.text, c.html)
            except Exception as exc:  # noqa: BLE001 - a library crash is a data point, not a stop
                body = with_sig = f"<crash {type(exc).__name__}>"
            got = with_sig if c.keeps_signature else body
            results[name][f"{c.source}/{c.id}"] = score(c.expected, got or "")
    return results


def table(
    title: str,
    groups: dict[str, list[Case]],
    results: dict[str, dict[str, tuple[bool, bool, bool]]],
) -> None:
    names = list(results)
    print(f"\n## {title}\n")
    head = f"{'group':<24}{'n':>5}  " + "  ".join(f"{n[:18]:>18}" for n in names)
    print(head)
    print(f"{'':<31}" + "  ".join(f"{'exact/leak/loss %':>18}" for _ in names))
    for g, cs in groups.items():
        if not cs:
            continue
        cells = []
        for n in names:
            rs = [results[n][f"{c.source}/{c.id}"] for c in cs]
            e, lk, ls = (round(100 * sum(r[i] for r in rs) / len(rs)) for i in range(3))
            cells.append(f"{e:>6}/{lk:>4}/{ls:>4}")
        print(f"{g:<24}{len(cs):>5}  " + "  ".join(f"{c:>18}" for c in cells))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", type=Path, default=Path("/work/cache/quotes/published"))
    ap.add_argument("--heldout", type=Path, default=ROOT / "tests/fixtures/replies")
    ap.add_argument("--details", action="store_true", help="print every case ours gets wrong")
    ap.add_argument("--only", default=None, help="run only cases whose source starts with this")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    tools = _tools()
    published = load_published(args.cache)
    heldout = load_heldout(args.heldout)
    cases = [c for c in published + heldout if not args.only or c.source.startswith(args.only)]
    results = run(cases, tools)
    print("tools:", ", ".join(tools))

    by_source: dict[str, list[Case]] = defaultdict(list)
    for c in cases:
        by_source[c.source].append(c)
    pub = [c for c in cases if not c.source.startswith("held-out")]
    held = [c for c in cases if c.source.startswith("held-out")]
    by_source["ALL published"] = pub
    by_source["ALL held-out"] = held
    table("per source", dict(by_source), results)
    for label, subset in (
        ("held-out, per language", held),
        ("held-out frozen, per language", [c for c in held if c.source.endswith("frozen")]),
    ):
        by_lang: dict[str, list[Case]] = {
            lang: [c for c in subset if c.lang == lang] for lang in LANGS
        }
        table(label, by_lang, results)
    styles: dict[str, list[Case]] = defaultdict(list)
    for c in held:
        styles[re.sub(r"[-_]\d+$", "", c.id.split("/")[0]).split(".")[0]].append(c)
    if args.details:
        for c in cases:
            e, lk, ls = results["ours"][f"{c.source}/{c.id}"]
            if not e:
                p = split_reply(c.text, c.html)
                got = p.body_with_signature if c.keeps_signature else p.new_text
                print(
                    f"\n--- {c.source}/{c.id} [{c.lang}] leak={lk} loss={ls} method={p.method}/{p.source}"
                )
                print("expected:", repr(c.expected[:300]))
                print("got:     ", repr(got[:300]))


if __name__ == "__main__":
    main()
