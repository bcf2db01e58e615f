"""Free-mail and shared mail domains: a sender there says nothing about its organisation.

An entry is a domain (`gmail.com`, covering its subdomains too) or `brand.*`, which covers
the brand under every public suffix (`yahoo.*`: yahoo.com, yahoo.co.uk, yahoo.fr ...).
"""

from __future__ import annotations

from collections.abc import Iterable

from mailticket.reading.maildomains import (
    InvalidDomain,
    normalise_domain,
    organizational_domain,
    parent_chain,
)

# Mailbox providers and consumer ISPs whose addresses anyone can get. Kept broad on
# purpose: a domain wrongly here only means its users need an exact contact address,
# while a domain wrongly missing maps strangers to a customer.
DEFAULT_SHARED_DOMAINS: tuple[str, ...] = (
    # global mailbox providers
    "gmail.com", "googlemail.com", "googlegroups.com",
    "outlook.*", "hotmail.*", "live.*", "msn.com", "windowslive.com", "passport.com",
    "yahoo.*", "ymail.com", "rocketmail.com", "aol.*", "aim.com",
    "icloud.com", "me.com", "mac.com",
    "proton.me", "protonmail.com", "protonmail.ch", "pm.me",
    "tutanota.com", "tutanota.de", "tutamail.com", "tuta.io", "tuta.com",
    "zoho.com", "zohomail.com", "zohomail.eu", "fastmail.com", "fastmail.fm", "hey.com",
    "hushmail.com", "mail.com", "email.com", "usa.com", "inbox.com", "gmx.*", "yandex.*",
    "ya.ru",
    # Germany, Austria, Switzerland
    "web.de", "t-online.de", "freenet.de", "arcor.de", "posteo.de", "posteo.net",
    "mailbox.org", "bluewin.ch", "hispeed.ch", "a1.net", "chello.at",
    # France, Benelux, Italy, Iberia
    "orange.fr", "wanadoo.fr", "free.fr", "laposte.net", "sfr.fr", "neuf.fr",
    "telenet.be", "skynet.be", "ziggo.nl", "kpnmail.nl", "xs4all.nl", "planet.nl", "home.nl",
    "libero.it", "virgilio.it", "alice.it", "tiscali.*", "telefonica.net", "sapo.pt",
    # Nordics, central and eastern Europe
    "telia.com", "online.no", "seznam.cz", "centrum.cz", "wp.pl", "onet.pl", "o2.pl",
    "interia.pl", "mail.ru", "inbox.ru", "list.ru", "bk.ru", "rambler.ru", "ukr.net",
    # United Kingdom, Ireland
    "btinternet.com", "sky.com", "virginmedia.com", "ntlworld.com", "talktalk.net", "eircom.net",
    # Americas
    "comcast.net", "att.net", "sbcglobal.net", "verizon.net", "bellsouth.net", "cox.net",
    "charter.net", "earthlink.net", "shaw.ca", "rogers.com", "sympatico.ca",
    "uol.com.br", "bol.com.br", "terra.com.br",
    # Asia-Pacific
    "qq.com", "163.com", "126.com", "yeah.net", "sina.com", "sohu.com", "aliyun.com",
    "naver.com", "daum.net", "hanmail.net", "rediffmail.com",
    "bigpond.com", "optusnet.com.au",
)


class SharedDomains:
    """Answers "is this a shared domain, and by which entry?" for a normalised domain."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.exact: set[str] = set()
        self.brands: set[str] = set()
        for raw in entries:
            entry = raw.strip().lower()
            if entry.startswith("*."):
                raise InvalidDomain(f"{raw!r}: write the bare domain; it covers its subdomains")
            if entry.endswith(".*"):
                brand = entry[:-2]
                if not brand or "." in brand:
                    raise InvalidDomain(f"{raw!r}: a wildcard entry is `brand.*`, like yahoo.*")
                normalise_domain(brand)
                self.brands.add(brand)
            else:
                self.exact.add(normalise_domain(entry))

    def entry_for(self, domain: str) -> str | None:
        for candidate in parent_chain(domain):
            if candidate in self.exact:
                return candidate
        org = organizational_domain(domain)
        brand, dot, suffix = org.partition(".")
        if dot and brand in self.brands:
            return f"{brand}.*"
        return None

    def is_shared(self, domain: str) -> bool:
        return self.entry_for(domain) is not None


def shared_domains(entries: list[str] | None, extra: Iterable[str] = ()) -> SharedDomains:
    """The configured list (None: DEFAULT_SHARED_DOMAINS) plus `extra`."""
    base = DEFAULT_SHARED_DOMAINS if entries is None else tuple(entries)
    return SharedDomains([*base, *extra])
