"""Generated mail that looks like a support mailbox (issue 12), for the benchmarks.

`generate_mix(n, seed)` yields exactly `n` raw messages, the same ones for the same
arguments. What a real support mailbox delivers, in roughly these shares:

- new conversations (~30%) and replies to them (~40%, In-Reply-To + References);
- replies delivered before their parents (~10% of replies): a child naming only its parent
  arrives first and opens a ticket of its own, the parent follows 1-300 messages later and
  ties that ticket to its thread's, so the two are merged (within a batch and across);
- long threads: a few conversations at a time grow to 50-150 messages;
- duplicates (~2%): the same bytes delivered again;
- auto-replies (~5%, Auto-Submitted, In-Reply-To our TKT Message-ID) and DSN bounces
  (~5%, multipart/report with the headers of our message);
- `[TKT-…]` subject-only replies (~6%), no threading headers at all;
- attachments on ~10% of messages, 10 KB-2 MB (log-uniform, so most are small), base64;
- legacy charsets on ~20%: ISO-8859-1/2/15, windows-1250/1251/1252 (8bit or
  quoted-printable), Shift_JIS (base64) and ISO-2022-JP (7bit), RFC 2047 subjects and names;
- HTML-only mail (~10%).

Ticket numbers in subject-only replies and in our Message-IDs are guessed from the order
tickets are opened (`day` is the date the pipeline numbers them by: today, UTC, by default),
so most of them hit their ticket, and the rest are what real mail has too: a stale number.

    .venv/bin/python bench/mailmix.py 2000 --stats      # what a run of 2,000 contains
    .venv/bin/python bench/mailmix.py 20 --dump DIR     # the messages as .eml files
"""

from __future__ import annotations

import argparse
import base64
import heapq
import quopri
import random
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

__all__ = ["generate_mix", "mix_kinds"]

WORDS = (
    "printer network invoice login password vpn outlook server backup license laptop screen "
    "slow error crash update install access account billing export report mailbox folder "
    "certificate firewall share drive keyboard monitor phone meeting calendar"
).split()

# charset -> (a sentence in a language that needs it, body transfer encoding, name)
LEGACY = {
    "iso-8859-1": ("Grüße aus Köln, der Drucker im Büro druckt nicht mehr.", "8bit", "Jürgen Müller"),
    "iso-8859-15": ("Le coût de la licence a augmenté de 20 €, merci de vérifier.", "quoted-printable", "Hélène Dubois"),
    "iso-8859-2": ("Dzień dobry, nie mogę się zalogować, błąd hasła.", "quoted-printable", "Paweł Żółkiewski"),
    "windows-1252": ("Ça ne marche pas – l’imprimante affiche « erreur ».", "8bit", "François Lefèvre"),
    "windows-1250": ("Dobrý den, tiskárna nefunguje, prosím o pomoc.", "8bit", "Jiří Dvořák"),
    "windows-1251": ("Здравствуйте, принтер не работает, помогите пожалуйста.", "8bit", "Иван Петров"),
    "shift_jis": ("お世話になっております。プリンターが動きません。", "base64", "山田 太郎"),
    "iso-2022-jp": ("お世話になっております。ログインできません。", "7bit", "鈴木 花子"),
}
ATTACHMENT_TYPES = (
    ("application/pdf", "report.pdf"), ("image/png", "screenshot.png"),
    ("application/zip", "logs.zip"), ("image/jpeg", "photo.jpg"),
)


@dataclass
class _Thread:
    root: str
    sender: str
    name: str
    subject: str
    charset: str | None
    number: int  # the ticket number it most likely got (order of opening)
    ids: list[str] = field(default_factory=list)
    target: int = 0  # a long thread's intended length


def _words(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def _encoded_word(text: str, charset: str) -> str:
    """RFC 2047 B-encoding, split so no encoded word passes 75 characters."""
    words, chunk = [], ""
    for char in text:
        if len((chunk + char).encode(charset, "replace")) > 36:
            words.append(chunk)
            chunk = ""
        chunk += char
    words.append(chunk)
    return "\r\n ".join(
        f"=?{charset}?B?{base64.b64encode(w.encode(charset, 'replace')).decode()}?=" for w in words
    )


class _Mix:
    def __init__(self, seed: int, day: str, domain: str) -> None:
        self.rng = random.Random(seed)
        self.seed, self.day, self.domain = seed, day, domain
        self.base = datetime(2026, 1, 5, 8, tzinfo=UTC)
        self.clock = 0
        self.serial = 0
        self.threads: list[_Thread] = []
        self.long: list[_Thread] = []
        self.opened = 0  # tickets the mail so far has most likely opened
        self.recent: deque[bytes] = deque(maxlen=300)

    # --- pieces -----------------------------------------------------------------------

    def _mid(self, host: str) -> str:
        self.serial += 1
        return f"<{self.serial}.{self.seed}.{self.rng.getrandbits(32):08x}@{host}>"

    def _date(self, back: int = 0) -> str:
        self.clock += 1
        return format_datetime(self.base + timedelta(seconds=3 * self.clock - back))

    def _our_id(self, number: int) -> str:
        return f"<TKT-{self.day}-{number:03d}-{self.rng.getrandbits(64):016x}@{self.domain}>"

    def _text(self, charset: str | None, quoted: str | None) -> str:
        rng = self.rng
        lines = ["Hello,", ""]
        if charset:
            lines.append(LEGACY[charset][0])
        lines += [_words(rng, 6, 16) for _ in range(rng.randint(2, 9))]
        lines += ["", "Best regards", "A customer", "-- ", f"ACME {rng.choice(WORDS).title()} Ltd"]
        if quoted:
            lines += ["", "On Mon, someone wrote:", *(f"> {q}" for q in quoted.splitlines()[:12])]
        return "\n".join(lines) + "\n"

    def _text_part(self, text: str, charset: str | None, html: bool) -> tuple[list[str], bytes]:
        subtype = "html" if html else "plain"
        if html:
            paras = "".join(f"<p>{line}</p>" for line in text.splitlines() if line)
            text = (
                "<html><head><style>p{margin:0}</style></head><body>"
                f"<div class=\"WordSection1\">{paras}<table><tr><td>Ticket</td>"
                "<td>open</td></tr></table></div></body></html>\n"
            )
        if charset is None:
            return [f"Content-Type: text/{subtype}; charset=utf-8",
                    "Content-Transfer-Encoding: 8bit"], text.replace("\n", "\r\n").encode()
        encoded = text.replace("\n", "\r\n").encode(charset, "replace")
        cte = LEGACY[charset][1]
        if cte == "quoted-printable":
            encoded = quopri.encodestring(encoded)
        elif cte == "base64":
            encoded = base64.encodebytes(encoded).replace(b"\n", b"\r\n")
        return [f'Content-Type: text/{subtype}; charset="{charset}"',
                f"Content-Transfer-Encoding: {cte}"], encoded

    def _attachment(self) -> tuple[list[str], bytes]:
        rng = self.rng
        size = int(10_240 * (200 ** rng.random()))  # log-uniform 10 KB .. 2 MB
        ctype, name = rng.choice(ATTACHMENT_TYPES)
        body = base64.encodebytes(rng.randbytes(size)).replace(b"\n", b"\r\n")
        return [f'Content-Type: {ctype}; name="{name}"',
                f'Content-Disposition: attachment; filename="{name}"',
                "Content-Transfer-Encoding: base64"], body

    def _message(
        self,
        *,
        sender: str,
        name: str,
        subject: str,
        mid: str,
        charset: str | None,
        quoted: str | None = None,
        in_reply_to: str | None = None,
        references: list[str] | None = None,
        back: int = 0,
    ) -> bytes:
        rng = self.rng
        host = sender.rpartition("@")[2]
        if charset and rng.random() < 0.05:
            # Legacy clients still send raw 8-bit header text, undeclared.
            display = name.encode(charset, "replace")
            subj = subject.encode(charset, "replace")
        else:
            display = (_encoded_word(name, charset) if charset else name).encode()
            subj = (_encoded_word(subject, charset) if charset and not subject.isascii()
                    else subject).encode()
        head = [
            f"Received: from {host} (mx.{host} [192.0.2.{rng.randint(1, 254)}]) by mx.example.com"
            f" with ESMTPS id {rng.getrandbits(40):x}; {self._date(back)}",
            f"Received: from [10.0.0.{rng.randint(1, 254)}] by {host} with ESMTPSA;"
            f" {format_datetime(self.base)}",
        ]
        lines = [h.encode() for h in head]
        lines.append(b"From: " + display + f" <{sender}>".encode())
        lines.append(b"To: Support <support@example.com>")
        lines.append(b"Subject: " + subj)
        lines.append(f"Date: {self._date(back)}".encode())
        lines.append(f"Message-ID: {mid}".encode())
        if in_reply_to:
            lines.append(f"In-Reply-To: {in_reply_to}".encode())
        if references:
            lines.append(("References: " + "\r\n ".join(references[-12:])).encode())
        lines.append(b"MIME-Version: 1.0")
        lines.append(f"X-Mailer: {rng.choice(('Outlook 16.0', 'Thunderbird 128', 'iPhone Mail'))}".encode())
        html = rng.random() < 0.10
        part_head, part_body = self._text_part(self._text(charset, quoted), charset, html)
        if rng.random() < 0.10:
            boundary = f"=_mix_{rng.getrandbits(48):012x}"
            att_head, att_body = self._attachment()
            lines.append(f'Content-Type: multipart/mixed; boundary="{boundary}"'.encode())
            body = b"\r\n".join([
                b"", b"This is a multi-part message in MIME format.",
                f"--{boundary}".encode(), *(h.encode() for h in part_head), b"", part_body,
                f"--{boundary}".encode(), *(h.encode() for h in att_head), b"", att_body,
                f"--{boundary}--".encode(), b"",
            ])
        else:
            lines += [h.encode() for h in part_head]
            body = b"\r\n" + part_body
        return b"\r\n".join(lines) + b"\r\n" + body

    # --- kinds --------------------------------------------------------------------------

    def new(self) -> bytes:
        rng = self.rng
        charset = rng.choice(list(LEGACY)) if rng.random() < 0.2 else None
        n = rng.randint(1, 20000)
        host = f"customer{rng.randint(1, 400)}.example"
        name = LEGACY[charset][2] if charset else f"User {n}"
        subject = _words(rng, 3, 6).capitalize()
        if charset and rng.random() < 0.5:
            subject += " – " + LEGACY[charset][0][:20]
        mid = self._mid(host)
        self.opened += 1
        thread = _Thread(mid, f"user{n}@{host}", name, subject, charset, self.opened, [mid])
        self.threads.append(thread)
        if len(self.long) < 3 and rng.random() < 0.05:
            thread.target = rng.randint(50, 150)
            self.long.append(thread)
        return self._message(sender=thread.sender, name=name, subject=subject, mid=mid,
                             charset=charset)

    def _pick(self) -> _Thread:
        rng = self.rng
        if self.long and rng.random() < 0.35:
            thread = rng.choice(self.long)
            if len(thread.ids) >= thread.target:
                self.long.remove(thread)
            return thread
        return rng.choice(self.threads[-3000:])

    def reply(self, thread: _Thread, *, parent: str | None = None, back: int = 0,
              only_parent: bool = False) -> tuple[str, bytes]:
        parent = parent or thread.ids[-1]
        mid = self._mid(thread.sender.rpartition("@")[2])
        refs = [parent] if only_parent else [*thread.ids[-11:]]
        if not only_parent and parent not in refs:
            refs.append(parent)
        raw = self._message(
            sender=thread.sender, name=thread.name, subject="Re: " + thread.subject, mid=mid,
            charset=thread.charset, quoted=_words(self.rng, 8, 20), in_reply_to=parent,
            references=refs, back=back,
        )
        return mid, raw

    def subject_only(self) -> bytes:
        thread = self._pick()
        mid = self._mid(thread.sender.rpartition("@")[2])
        subject = f"RE: [TKT-{self.day}-{thread.number:03d}] {thread.subject}"
        thread.ids.append(mid)
        return self._message(sender=thread.sender, name=thread.name, subject=subject, mid=mid,
                             charset=thread.charset, quoted=_words(self.rng, 5, 10))

    def auto_reply(self) -> bytes:
        thread = self._pick()
        ours = self._our_id(thread.number)
        host = thread.sender.rpartition("@")[2]
        return (
            f"From: {thread.name if thread.charset is None else 'Auto'} <{thread.sender}>\r\n"
            f"To: support@{self.domain}\r\n"
            f"Subject: Automatic reply: [TKT-{self.day}-{thread.number:03d}] {thread.subject}\r\n"
            f"Date: {self._date()}\r\nMessage-ID: {self._mid(host)}\r\n"
            f"In-Reply-To: {ours}\r\nReferences: {ours}\r\n"
            "Auto-Submitted: auto-replied\r\nX-Auto-Response-Suppress: All\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            "I am out of the office until Monday and will answer your message then.\r\n"
        ).encode()

    def bounce(self) -> bytes:
        rng = self.rng
        thread = self._pick()
        ours = self._our_id(thread.number)
        boundary = f"=_dsn_{rng.getrandbits(48):012x}"
        host = thread.sender.rpartition("@")[2]
        return (
            f"Return-Path: <>\r\nFrom: Mail Delivery System <MAILER-DAEMON@mx.{host}>\r\n"
            f"To: support@{self.domain}\r\nSubject: Undelivered Mail Returned to Sender\r\n"
            f"Date: {self._date()}\r\nMessage-ID: {self._mid('mx.' + host)}\r\n"
            "Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
            f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"'
            f"\r\n\r\n--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
            "This is the mail system. Your message could not be delivered to one or more\r\n"
            f"recipients.\r\n\r\n<{thread.sender}>: host mx.{host} said: 550 5.1.1 user unknown\r\n"
            f"\r\n--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"
            f"Reporting-MTA: dns; mx.{host}\r\nArrival-Date: {format_datetime(self.base)}\r\n\r\n"
            f"Final-Recipient: rfc822; {thread.sender}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
            f"Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n"
            f"\r\n--{boundary}\r\nContent-Type: message/rfc822-headers\r\n\r\n"
            f"From: Support <support@{self.domain}>\r\nTo: {thread.sender}\r\n"
            f"Subject: [TKT-{self.day}-{thread.number:03d}] {thread.subject}\r\n"
            f"Message-ID: {ours}\r\nAuto-Submitted: auto-replied\r\n"
            f"\r\n--{boundary}--\r\n"
        ).encode()


def generate_mix(
    n: int, seed: int = 1, *, day: str | None = None, domain: str = "mailticket.local"
) -> Iterator[bytes]:
    """Exactly `n` raw messages of a support mailbox (see the module's docstring)."""
    for _kind, raw in mix_kinds(n, seed, day=day, domain=domain):
        yield raw


def mix_kinds(
    n: int, seed: int = 1, *, day: str | None = None, domain: str = "mailticket.local"
) -> Iterator[tuple[str, bytes]]:
    """`generate_mix`'s messages, each with the kind it was made as."""
    mix = _Mix(seed, day or datetime.now(UTC).strftime("%Y%m%d"), domain)
    rng = mix.rng
    held: list[tuple[int, int, bytes]] = []  # heap of (due at, serial, parent)
    produced = 0
    while produced < n:
        if held and (held[0][0] <= produced or produced + len(held) >= n):
            out: tuple[str, bytes] = ("late parent", heapq.heappop(held)[2])
        else:
            roll = rng.random()
            if not mix.threads or roll < 0.30:
                out = ("new", mix.new())
            elif roll < 0.62:
                thread = mix._pick()
                mid, raw = mix.reply(thread)
                thread.ids.append(mid)
                out = ("reply", raw)
            elif roll < 0.68 and produced + len(held) + 2 <= n:
                # A reply whose parent arrives later: the child names only its parent, so it
                # opens a ticket; the parent then ties that ticket to its thread's (a merge).
                thread = mix._pick()
                parent_id, parent = mix.reply(thread, back=2)
                child_id, child = mix.reply(thread, parent=parent_id, only_parent=True)
                thread.ids += [parent_id, child_id]
                mix.opened += 1
                heapq.heappush(held, (produced + rng.randint(1, 300), produced, parent))
                out = ("early child", child)
            elif roll < 0.74:
                out = ("subject only", mix.subject_only())
            elif roll < 0.79:
                out = ("auto-reply", mix.auto_reply())
            elif roll < 0.84:
                out = ("bounce", mix.bounce())
            elif roll < 0.86 and mix.recent:
                out = ("duplicate", rng.choice(mix.recent))
            else:
                thread = mix._pick()
                mid, raw = mix.reply(thread)
                thread.ids.append(mid)
                out = ("reply", raw)
        mix.recent.append(out[1])
        produced += 1
        yield out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("n", type=int, nargs="?", default=2000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--stats", action="store_true", help="print the share of each kind")
    ap.add_argument("--dump", type=Path, help="write the messages to this directory")
    args = ap.parse_args()
    kinds: Counter[str] = Counter()
    charsets: Counter[str] = Counter()
    total = attachments = html = 0
    if args.dump:
        args.dump.mkdir(parents=True, exist_ok=True)
    for i, (kind, raw) in enumerate(mix_kinds(args.n, args.seed)):
        kinds[kind] += 1
        total += len(raw)
        attachments += b"Content-Disposition: attachment" in raw
        html += b"Content-Type: text/html" in raw
        for charset in LEGACY:
            if f'charset="{charset}"'.encode() in raw:
                charsets[charset] += 1
        if args.dump:
            (args.dump / f"{i:06d}.eml").write_bytes(raw)
    if args.stats or not args.dump:
        for kind, count in kinds.most_common():
            print(f"{kind:14} {count:7,}  {100 * count / args.n:5.1f}%")
        print(f"attachments    {attachments:7,}  {100 * attachments / args.n:5.1f}%")
        print(f"HTML only      {html:7,}  {100 * html / args.n:5.1f}%")
        print(f"legacy charset {sum(charsets.values()):7,}  {dict(charsets)}")
        print(f"mean size      {total / args.n / 1024:7.1f} KB")


if __name__ == "__main__":
    main()
