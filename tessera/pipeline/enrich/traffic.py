"""Where a visit came from: UTM tags and click ids of the landing page, and the kind of referrer.

Everything here reads client-sent strings, so nothing raises: a URL that cannot be parsed gives
no tags and no host, never an error.
"""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import parse_qsl, urlsplit

import msgspec

ReferrerType = Literal["direct", "internal", "search", "social", "email", "external"]

UTM_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
# Ad platforms' click ids: Google (gclid, and gbraid/wbraid for iOS, dclid for Display),
# Meta, Microsoft, TikTok, X, LinkedIn.
CLICK_ID_KEYS = (
    "gclid",
    "gbraid",
    "wbraid",
    "dclid",
    "fbclid",
    "msclkid",
    "ttclid",
    "twclid",
    "li_fat_id",
)
EMAIL_MEDIUMS = frozenset({"email", "e-mail", "e_mail"})

# Bounds on what a client can make us parse and store.
MAX_URL_LENGTH = 8192
MAX_STORED_URL_LENGTH = 2048
MAX_VALUE_LENGTH = 512

# Hosts known by their full name (or a parent domain), checked before the site name below so
# that mail.google.com is webmail rather than search. Android apps appear as
# android-app://<package>/, whose "host" is the package name.
KNOWN_HOSTS: dict[str, ReferrerType] = {
    # webmail and mail apps
    "mail.google.com": "email",
    "com.google.android.gm": "email",
    "outlook.live.com": "email",
    "outlook.office.com": "email",
    "outlook.office365.com": "email",
    "mail.yahoo.com": "email",
    "mail.aol.com": "email",
    "mail.proton.me": "email",
    "mail.protonmail.com": "email",
    # Google hosts that are not its search engine (sign-in redirects are common referrers)
    "accounts.google.com": "external",
    "docs.google.com": "external",
    "drive.google.com": "external",
    "sites.google.com": "external",
    "calendar.google.com": "external",
    "meet.google.com": "external",
    "play.google.com": "external",
    # search engines whose site name is ambiguous or shared
    "search.brave.com": "search",
    "search.aol.com": "search",
    "ya.ru": "search",
    "so.com": "search",
    "com.google.android.googlequicksearchbox": "search",
    # link shorteners and apps of social networks
    "t.co": "social",
    "fb.me": "social",
    "lnkd.in": "social",
    "youtu.be": "social",
    "redd.it": "social",
    "pin.it": "social",
    "t.me": "social",
    "wa.me": "social",
    "ok.ru": "social",
    "com.facebook.katana": "social",
    "com.instagram.android": "social",
    "com.linkedin.android": "social",
    "com.twitter.android": "social",
    "com.reddit.frontpage": "social",
}

# Site names (the label before the public suffix: "google" in www.google.co.uk), so that every
# country domain of an engine or network counts without listing them all.
SEARCH_SITES = frozenset(
    {
        "google",
        "bing",
        "duckduckgo",
        "yahoo",
        "baidu",
        "yandex",
        "ecosia",
        "naver",
        "seznam",
        "qwant",
        "startpage",
        "ask",
        "sogou",
        "kagi",
        "mojeek",
        "petalsearch",
        "yep",
    }
)
SOCIAL_SITES = frozenset(
    {
        "facebook",
        "fb",
        "messenger",
        "instagram",
        "threads",
        "twitter",
        "x",
        "linkedin",
        "reddit",
        "youtube",
        "tiktok",
        "pinterest",
        "snapchat",
        "tumblr",
        "vk",
        "bsky",
        "mastodon",
        "quora",
        "whatsapp",
        "telegram",
        "discord",
        "weibo",
        "xing",
    }
)
# Second-level labels under which a country code domain registers names (google.co.uk,
# google.com.br); without a public-suffix list this is the usual shape.
_SECOND_LEVEL = frozenset({"co", "com", "org", "net", "ac", "gov", "edu", "ne", "or", "gob"})
# A host name or address: letters (any script), digits, dots, hyphens, underscores, and the
# colons of an IPv6 address.
_HOST = re.compile(r"[\w.:-]+")


class ReferrerInfo(msgspec.Struct, frozen=True):
    type: ReferrerType
    url: str | None = None
    host: str | None = None


class TrafficInfo(msgspec.Struct, frozen=True):
    # Only the tags present; keys are the UTM_KEYS without "utm_" ("source", "medium"...).
    utm: dict[str, str]
    referrer: ReferrerInfo
    # Only the ids present, by their parameter name.
    click_ids: dict[str, str]


def describe_visit_source(page_url: str | None, referrer: str | None) -> TrafficInfo:
    """UTM tags and click ids from the landing page's query string, and what kind of place the
    referrer is. Never raises."""
    params = _query_params(page_url)
    utm = {key[4:]: params[key] for key in UTM_KEYS if key in params}
    click_ids = {key: params[key] for key in CLICK_ID_KEYS if key in params}
    return TrafficInfo(
        utm=utm,
        referrer=_describe_referrer(page_url, referrer, utm.get("medium")),
        click_ids=click_ids,
    )


def host_of(url: str | None) -> str | None:
    """The lower-case host of a URL, also of one written without a scheme ("www.x.com/a");
    None when there is none or it is not a plausible host name."""
    if not url:
        return None
    url = url.strip()[:MAX_URL_LENGTH]
    try:
        parts = urlsplit(url)
        host = parts.hostname
        if not host and not parts.scheme and not url.startswith(("/", "?", "#")):
            host = urlsplit("//" + url).hostname
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return None
    if not host:
        return None
    host = host.rstrip(".")
    return host if _HOST.fullmatch(host) else None


def _query_params(page_url: str | None) -> dict[str, str]:
    """First non-blank value of each parameter, lower-case names. The first wins, as with
    URLSearchParams.get in the browser that made the request."""
    if not page_url:
        return {}
    page_url = page_url[:MAX_URL_LENGTH]
    try:
        query = urlsplit(page_url).query
    except ValueError:
        # The host part is broken; the query string may still be fine.
        query = page_url.partition("?")[2].partition("#")[0]
    params: dict[str, str] = {}
    for name, value in parse_qsl(query, errors="replace"):
        key = name.strip().lower()
        cleaned = value.strip()[:MAX_VALUE_LENGTH]
        if cleaned and key not in params:
            params[key] = cleaned
    return params


def _describe_referrer(
    page_url: str | None, referrer: str | None, utm_medium: str | None
) -> ReferrerInfo:
    url = referrer.strip()[:MAX_STORED_URL_LENGTH] if referrer else None
    host = host_of(url)
    # Email clients mostly send no referrer at all, so the tag decides before "direct" does.
    if utm_medium is not None and utm_medium.lower() in EMAIL_MEDIUMS:
        return ReferrerInfo(type="email", url=url or None, host=host)
    if host is None:
        # Nothing to attribute the visit to; a referrer without a host ("about:blank") too.
        return ReferrerInfo(type="direct", url=url or None)
    page_host = host_of(page_url)
    if page_host is not None and _bare(page_host) == _bare(host):
        return ReferrerInfo(type="internal", url=url, host=host)
    return ReferrerInfo(type=_kind_of_host(host), url=url, host=host)


def _kind_of_host(host: str) -> ReferrerType:
    labels = host.split(".")
    # Most specific first: mail.google.com before google.com.
    for start in range(len(labels)):
        known = KNOWN_HOSTS.get(".".join(labels[start:]))
        if known is not None:
            return known
    if labels[0] == "webmail":
        return "email"
    site = _site_name(labels)
    if site in SEARCH_SITES:
        return "search"
    if site in SOCIAL_SITES:
        return "social"
    return "external"


def _site_name(labels: list[str]) -> str | None:
    if len(labels) < 2:
        return None
    if len(labels) >= 3 and labels[-2] in _SECOND_LEVEL and len(labels[-1]) == 2:
        return labels[-3]
    return labels[-2]


def _bare(host: str) -> str:
    """www.example.com and example.com are the same site."""
    return host.removeprefix("www.")
