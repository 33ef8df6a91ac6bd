"""Session enrichment: device and bot detection, traffic source, time zone, the combined dict."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest

from tessera.pipeline.enrich import (
    describe_device,
    describe_visit_source,
    enrich_new_session,
    local_time,
    resolve_timezone,
)
from tessera.pipeline.enrich import device as device_module
from tessera.pipeline.enrich.device import AUTOMATION_MARKERS, MAX_USER_AGENT_LENGTH

CHROME_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
SAFARI_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1"
)
CHROME_ANDROID_TABLET = (
    "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/123.0.6312.118 Safari/537.36"
)
FIREFOX_ANDROID_TABLET = "Mozilla/5.0 (Android 13; Tablet; rv:125.0) Gecko/125.0 Firefox/125.0"
CHROME_ANDROID_PHONE = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Mobile Safari/537.36"
)
CUBOT_PHONE = (
    "Mozilla/5.0 (Linux; Android 9; CUBOT P30) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/96.0.4664.104 Mobile Safari/537.36"
)
IPAD = (
    "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1"
)
FIREFOX_LINUX = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"
SAFARI_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15"
)
SMART_TV = (
    "Mozilla/5.0 (Linux; Android 10; BRAVIA 4K UR2) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/90.0 Safari/537.36"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
GOOGLEBOT_SMARTPHONE = (
    "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/124.0.6367.155 Mobile Safari/537.36 "
    "(compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
)
BINGBOT = "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)"
HEADLESS_CHROME = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/124.0.0.0 Safari/537.36"
)


# --- device ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user_agent", "device_type", "browser", "os", "device"),
    [
        (CHROME_WINDOWS, "desktop", ("Chrome", "124.0.0.0"), ("Windows", "10"), (None, None)),
        (
            SAFARI_IPHONE,
            "mobile",
            ("Mobile Safari", "17.4.1"),
            ("iOS", "17.4.1"),
            ("iPhone", "Apple"),
        ),
        (
            CHROME_ANDROID_TABLET,
            "tablet",
            ("Chrome", "123.0.6312.118"),
            ("Android", "13"),
            ("SM-X700", None),
        ),
        (FIREFOX_ANDROID_TABLET, "tablet", ("Firefox Mobile", "125.0"), ("Android", "13"), None),
        (
            CHROME_ANDROID_PHONE,
            "mobile",
            ("Chrome Mobile", "124.0.0.0"),
            ("Android", "14"),
            ("Pixel 8", "Google"),
        ),
        (CUBOT_PHONE, "mobile", ("Chrome Mobile", "96.0.4664.104"), ("Android", "9"), None),
        (IPAD, "tablet", ("Mobile Safari", "17.4"), ("iOS", "17.4"), ("iPad", "Apple")),
        (FIREFOX_LINUX, "desktop", ("Firefox", "125.0"), ("Linux", None), (None, None)),
        (SAFARI_MAC, "desktop", ("Safari", "17.4"), ("Mac OS X", "10.15.7"), ("Mac", "Apple")),
        (SMART_TV, "other", ("Chrome", "90.0"), ("Android", "10"), None),
    ],
)
def test_browsers_are_described(
    user_agent: str,
    device_type: str,
    browser: tuple[str | None, str | None],
    os: tuple[str | None, str | None],
    device: tuple[str | None, str | None] | None,
) -> None:
    info = describe_device(user_agent)
    assert info.is_bot is False
    assert info.device.type == device_type
    assert (info.browser.name, info.browser.version) == browser
    assert (info.os.name, info.os.version) == os
    if device is not None:
        assert (info.device.name, info.device.brand) == device


@pytest.mark.parametrize(
    "user_agent",
    [
        SMART_TV,
        "Mozilla/5.0 (Linux; Android 9; AFTMM Build/PS7233) AppleWebKit/537.36 (KHTML, like "
        "Gecko) Chrome/70.0.3538.110 Mobile Safari/537.36",
        "Mozilla/5.0 (SMART-TV; Linux; Tizen 6.0) AppleWebKit/538.1 (KHTML, like Gecko) "
        "Version/6.0 TV Safari/538.1",
        "Mozilla/5.0 (PlayStation; PlayStation 5/2.26) AppleWebKit/605.1.15 (KHTML, like Gecko)",
    ],
)
def test_tvs_and_consoles_are_other(user_agent: str) -> None:
    info = describe_device(user_agent)
    assert (info.device.type, info.is_bot) == ("other", False)


def test_the_word_after_is_not_a_fire_tv() -> None:
    assert describe_device(CHROME_ANDROID_PHONE + " after").device.type == "mobile"


@pytest.mark.parametrize(
    ("user_agent", "browser"),
    [
        (GOOGLEBOT, "Googlebot"),
        (GOOGLEBOT_SMARTPHONE, "Googlebot"),
        (BINGBOT, "bingbot"),
        ("curl/8.5.0", "curl"),
        ("python-requests/2.31.0", "Python Requests"),
        ("python-httpx/0.27.0", None),
        ("Go-http-client/1.1", "Go-http-client"),
        (HEADLESS_CHROME, "HeadlessChrome"),
        ("facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)", None),
    ],
)
def test_crawlers_and_scripts_are_bots(user_agent: str, browser: str | None) -> None:
    info = describe_device(user_agent)
    assert info.is_bot is True
    assert info.device.type == "bot"
    if browser is not None:
        assert info.browser.name == browser


@pytest.mark.parametrize("marker", AUTOMATION_MARKERS)
def test_every_documented_marker_makes_a_bot_in_any_case(marker: str) -> None:
    assert describe_device(f"Mozilla/5.0 (X11; Linux x86_64) {marker.upper()}1.0").is_bot


@pytest.mark.parametrize("user_agent", [None, "", "   "])
def test_a_missing_user_agent_counts_as_a_bot(user_agent: str | None) -> None:
    info = describe_device(user_agent)
    assert info.is_bot is True
    assert info.device.type == "bot"
    assert info.browser.name is None and info.os.name is None


@pytest.mark.parametrize(
    "garbage", ["asdkjh 1234 !!! ???", "\x00\xff\u2603" * 50, "()()()(", "lone \ud800 surrogate"]
)
def test_garbage_is_unknown_but_not_a_bot(garbage: str) -> None:
    info = describe_device(garbage)
    assert info.is_bot is False
    assert info.device.type == "other"
    assert info.browser.name is None and info.os.name is None and info.device.name is None


def test_cached_results_are_shared_and_frozen() -> None:
    device_module.clear_cache()
    first = describe_device(SAFARI_IPHONE)
    assert describe_device(SAFARI_IPHONE) is first
    stats = device_module.cache_info()
    assert (stats.misses, stats.hits) == (1, 1)
    with pytest.raises(AttributeError):
        first.is_bot = True  # type: ignore[misc]


def test_each_distinct_user_agent_is_parsed_once() -> None:
    device_module.clear_cache()
    for _ in range(100):
        for user_agent in (CHROME_WINDOWS, SAFARI_IPHONE, GOOGLEBOT):
            describe_device(user_agent)
    assert device_module.cache_info().misses == 3


def test_long_user_agents_are_cut_before_parsing_and_caching() -> None:
    device_module.clear_cache()
    head = CHROME_WINDOWS + " " * (MAX_USER_AGENT_LENGTH - len(CHROME_WINDOWS))
    one = describe_device(head + "x" * 100_000)
    other = describe_device(head + "y" * 5_000)
    assert one is other  # one cache entry, keyed by the first 1,024 characters
    assert one.browser.name == "Chrome"
    assert device_module.cache_info().misses == 1


# --- traffic --------------------------------------------------------------------------------


def test_utm_tags_present_are_taken_from_the_page_url() -> None:
    info = describe_visit_source(
        "https://shop.example.com/landing?utm_source=newsletter&utm_medium=cpc"
        "&utm_campaign=spring&x=1#utm_term=ignored",
        None,
    )
    assert info.utm == {"source": "newsletter", "medium": "cpc", "campaign": "spring"}
    assert info.click_ids == {}


def test_utm_values_are_decoded() -> None:
    info = describe_visit_source(
        "https://example.com/?utm_campaign=spring%20sale%2026&utm_term=red+shoes"
        "&utm_content=%C5%BC%C3%B3%C5%82w&utm_source=a%26b%3Dc&utm_medium=%E0%A4%A",
        None,
    )
    assert info.utm == {
        "campaign": "spring sale 26",
        "term": "red shoes",
        "content": "żółw",
        "source": "a&b=c",
        "medium": "\ufffd%A",  # a broken escape is replaced, not raised on
    }


def test_the_first_non_blank_value_of_a_repeated_key_wins() -> None:
    info = describe_visit_source(
        "https://example.com/?utm_source=&utm_source=google&utm_source=bing&UTM_Medium=cpc",
        None,
    )
    assert info.utm == {"source": "google", "medium": "cpc"}


def test_click_ids_are_kept() -> None:
    info = describe_visit_source(
        "https://example.com/p?gclid=Cj0KCQ&fbclid=IwAR2x&msclkid=abc123&other=1", None
    )
    assert info.click_ids == {"gclid": "Cj0KCQ", "fbclid": "IwAR2x", "msclkid": "abc123"}


def test_utm_values_are_bounded() -> None:
    info = describe_visit_source("https://example.com/?utm_source=" + "a" * 10_000, None)
    assert len(info.utm["source"]) == 512


@pytest.mark.parametrize(
    ("referrer", "kind"),
    [
        (None, "direct"),
        ("", "direct"),
        ("   ", "direct"),
        ("about:blank", "direct"),
        ("https://www.example.com/other-page", "internal"),
        ("https://example.com:8443/x", "internal"),
        ("https://shop.example.com/", "external"),
        ("https://www.google.com/", "search"),
        ("https://www.google.co.uk/search?q=shoes", "search"),
        ("https://www.google.de/", "search"),
        ("https://www.bing.com/search?q=shoes", "search"),
        ("https://duckduckgo.com/", "search"),
        ("https://search.yahoo.co.jp/search?p=x", "search"),
        ("https://www.baidu.com/link?url=x", "search"),
        ("https://yandex.ru/search/?text=x", "search"),
        ("https://www.ecosia.org/search?q=x", "search"),
        ("https://search.brave.com/search?q=x", "search"),
        ("android-app://com.google.android.googlequicksearchbox/", "search"),
        ("www.google.com/search?q=x", "search"),  # written without a scheme
        ("https://l.facebook.com/l.php?u=x", "social"),
        ("https://www.instagram.com/", "social"),
        ("https://t.co/AbC123", "social"),
        ("https://twitter.com/someone", "social"),
        ("https://x.com/someone/status/1", "social"),
        ("https://www.linkedin.com/feed/", "social"),
        ("https://lnkd.in/abc", "social"),
        ("https://out.reddit.com/t3_x", "social"),
        ("https://www.youtube.com/watch?v=x", "social"),
        ("https://www.tiktok.com/@someone", "social"),
        ("https://pin.it/abc", "social"),
        ("https://mail.google.com/mail/u/0/", "email"),
        ("https://outlook.live.com/mail/0/", "email"),
        ("https://webmail.example.net/", "email"),
        ("https://accounts.google.com/o/oauth2/auth", "external"),
        ("https://news.ycombinator.com/item?id=1", "external"),
        ("https://blog.example.org/post", "external"),
    ],
)
def test_referrers_are_classified(referrer: str | None, kind: str) -> None:
    info = describe_visit_source("https://example.com/landing?a=1", referrer)
    assert info.referrer.type == kind


def test_a_referrer_keeps_its_url_and_host() -> None:
    info = describe_visit_source("https://example.com/", "  https://WWW.Google.COM:443/search  ")
    assert info.referrer.url == "https://WWW.Google.COM:443/search"
    assert info.referrer.host == "www.google.com"
    assert describe_visit_source("https://example.com/", None).referrer.url is None


@pytest.mark.parametrize("referrer", [None, "https://www.google.com/", "https://example.com/a"])
def test_utm_medium_email_makes_an_email_visit(referrer: str | None) -> None:
    info = describe_visit_source("https://example.com/?utm_medium=Email&utm_source=nl", referrer)
    assert info.referrer.type == "email"


def test_a_search_engine_linking_to_its_own_pages_is_internal() -> None:
    info = describe_visit_source("https://www.google.com/maps", "https://google.com/")
    assert info.referrer.type == "internal"


@pytest.mark.parametrize(
    ("page_url", "referrer"),
    [
        ("http://[::1", "http://[::1"),
        ("::::", "::::"),
        ("not a url at all", "not a referrer"),
        ("javascript:alert(1)", "javascript:alert(1)"),
        ("%%%%", "%zz%"),
        ("http://exa mple.com/?utm_source=%", "http://exa mple.com/"),
        ("\x00\x01\x02", "\ud800"),
        ("https://example.com/?utm_source=\udfff", "https://\ud800.com/"),
        ("https://example.com/?" + "&".join(["a=1"] * 50_000), "https://" + "a" * 100_000),
        ("", ""),
        (None, None),
    ],
)
def test_malformed_urls_never_raise(page_url: str | None, referrer: str | None) -> None:
    info = describe_visit_source(page_url, referrer)
    assert info.referrer.type in {"direct", "external", "internal"}
    assert info.referrer.url is None or len(info.referrer.url) <= 2048


def test_a_broken_host_does_not_hide_the_query_string() -> None:
    info = describe_visit_source("http://[::1/landing?utm_source=ads&gclid=x", None)
    assert info.utm == {"source": "ads"}
    assert info.click_ids == {"gclid": "x"}


def test_a_hostless_referrer_is_direct_but_kept() -> None:
    info = describe_visit_source("https://example.com/", "javascript:alert(1)")
    assert info.referrer.type == "direct"
    assert info.referrer.host is None
    assert info.referrer.url == "javascript:alert(1)"


# --- time zone ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "context",
    [
        {"time": {"tz": "Europe/Warsaw"}},
        {"time": {"timezone": "Europe/Warsaw"}},
        {"timezone": "Europe/Warsaw"},
        {"browser": {"timezone": "Europe/Warsaw"}},
        {"browser": {"timeZone": " europe/WARSAW "}},
        {"time": {"tz": "Mars/Olympus"}, "browser": {"timezone": "Europe/Warsaw"}},
        {"time": "12:00", "timezone": 120, "browser": {"timezone": "Europe/Warsaw"}},
    ],
)
def test_the_time_zone_is_found_and_spelled_canonically(context: dict[str, Any]) -> None:
    assert resolve_timezone(context) == "Europe/Warsaw"


@pytest.mark.parametrize(
    "value",
    [
        "Mars/Olympus",
        "+02:00",
        "-120",
        "../../../etc/passwd",
        "/etc/localtime",
        "Europe/" + "x" * 500,
        "",
        "   ",
        -120,
        None,
        {"name": "Europe/Warsaw"},
        ["Europe/Warsaw"],
    ],
)
def test_unknown_time_zones_give_none(value: Any) -> None:
    assert resolve_timezone({"time": {"tz": value}, "timezone": value}) is None


def test_no_time_zone_anywhere_gives_none() -> None:
    assert resolve_timezone({}) is None
    assert resolve_timezone({"time": None, "browser": "Chrome"}) is None


def test_utc_and_other_valid_zones() -> None:
    assert resolve_timezone({"timezone": "UTC"}) == "UTC"
    assert resolve_timezone({"timezone": "America/Argentina/Buenos_Aires"}) == (
        "America/Argentina/Buenos_Aires"
    )
    assert resolve_timezone({"timezone": "Asia/Kolkata"}) == "Asia/Kolkata"


def test_local_time_follows_summer_time() -> None:
    winter = local_time(datetime(2026, 1, 15, 12, 0, tzinfo=UTC), "Europe/Warsaw")
    summer = local_time(datetime(2026, 7, 15, 12, 0, tzinfo=UTC), "Europe/Warsaw")
    assert winter is not None and summer is not None
    assert (winter.hour, summer.hour) == (13, 14)
    assert str(winter.tzinfo) == "Europe/Warsaw"


def test_local_time_takes_a_naive_time_as_utc() -> None:
    local = local_time(datetime(2026, 1, 15, 12, 0), "Asia/Kolkata")
    assert local is not None
    assert (local.hour, local.minute) == (17, 30)


@pytest.mark.parametrize("tz", [None, "Mars/Olympus", "", "+02:00"])
def test_local_time_without_a_valid_zone_is_none(tz: str | None) -> None:
    assert local_time(datetime(2026, 1, 15, 12, 0, tzinfo=UTC), tz) is None


# --- the combined dict ----------------------------------------------------------------------


def test_a_new_session_is_enriched_from_context_and_headers() -> None:
    context = {
        "page": {
            "url": "https://example.com/landing?utm_source=google&utm_medium=cpc&gclid=abc",
            "referrer": "https://www.google.pl/",
        },
        "time": {"tz": "Europe/Warsaw"},
        "browser": {"userAgent": CHROME_WINDOWS},
    }
    assert enrich_new_session(context, {"user-agent": SAFARI_IPHONE}) == {
        "device": {"type": "mobile", "name": "iPhone", "brand": "Apple", "model": "iPhone"},
        "os": {"name": "iOS", "version": "17.4.1"},
        "browser": {"name": "Mobile Safari", "version": "17.4.1"},
        "bot": False,
        "utm": {"source": "google", "medium": "cpc"},
        "click_ids": {"gclid": "abc"},
        "referrer": {"type": "search", "url": "https://www.google.pl/", "host": "www.google.pl"},
        "timezone": "Europe/Warsaw",
    }


def test_the_tracker_user_agent_is_used_when_the_header_is_missing() -> None:
    context = {"browser": {"userAgent": FIREFOX_LINUX}}
    assert enrich_new_session(context, {})["browser"]["name"] == "Firefox"
    assert enrich_new_session(context, {"user-agent": "  "})["browser"]["name"] == "Firefox"
    assert enrich_new_session({}, {"User-Agent": FIREFOX_LINUX})["os"]["name"] == "Linux"


@pytest.mark.parametrize(
    ("page", "kind", "host"),
    [
        ({"referer": "https://t.co/x"}, "social", "t.co"),
        (
            {"referrer": {"url": "https://www.bing.com/search", "host": "www.bing.com"}},
            "search",
            None,
        ),
        ({"referrer": {"host": "www.linkedin.com"}}, "social", "www.linkedin.com"),
        ({"referrer": {"url": "", "host": "duckduckgo.com"}}, "search", "duckduckgo.com"),
        ({"referrer": {}}, "direct", None),
        ({"referrer": ["https://t.co/"]}, "direct", None),
    ],
)
def test_referrer_spellings_and_shapes(page: dict[str, Any], kind: str, host: str | None) -> None:
    page = {"url": "https://example.com/", **page}
    referrer = enrich_new_session({"page": page}, {"user-agent": CHROME_WINDOWS})["referrer"]
    assert referrer["type"] == kind
    if host is not None:
        assert referrer["host"] == host


def test_an_empty_request_gives_a_direct_bot_without_a_zone() -> None:
    assert enrich_new_session({}, {}) == {
        "device": {"type": "bot", "name": None, "brand": None, "model": None},
        "os": {"name": None, "version": None},
        "browser": {"name": None, "version": None},
        "bot": True,
        "utm": {},
        "click_ids": {},
        "referrer": {"type": "direct", "url": None, "host": None},
        "timezone": None,
    }


@pytest.mark.parametrize(
    "context",
    [
        {"page": 5, "browser": 7, "time": [1]},
        {"page": {"url": 5, "referrer": 3}, "browser": {"userAgent": 9}},
        {"page": "https://example.com/?utm_source=x", "timezone": {"tz": "UTC"}},
        {"page": {"url": None, "referrer": None}},
    ],
)
def test_odd_context_shapes_never_raise(context: dict[str, Any]) -> None:
    result = enrich_new_session(context, {})
    assert result["referrer"]["type"] == "direct"


def test_the_result_belongs_to_the_caller() -> None:
    first = enrich_new_session({}, {"user-agent": SAFARI_IPHONE})
    first["device"]["type"] = "changed"
    first["browser"]["name"] = "changed"
    again = enrich_new_session({}, {"user-agent": SAFARI_IPHONE})
    assert again["device"]["type"] == "mobile"
    assert again["browser"]["name"] == "Mobile Safari"


# --- cost (measured and printed, not asserted) ----------------------------------------------


def _per_call_microseconds(call: Any, rounds: int) -> float:
    start = time.perf_counter()
    for index in range(rounds):
        call(index)
    return (time.perf_counter() - start) / rounds * 1e6


def test_measure_cost_per_call(capsys: pytest.CaptureFixture[str]) -> None:
    agents = [CHROME_WINDOWS, SAFARI_IPHONE, CHROME_ANDROID_TABLET, FIREFOX_LINUX, GOOGLEBOT]
    uncached = device_module._describe.__wrapped__
    device_module.warm_up()
    for agent in agents:  # compile the rules these strings touch before timing
        uncached(agent)
    context = {
        "page": {"url": "https://example.com/?utm_source=g&gclid=x", "referrer": "https://t.co/"},
        "time": {"tz": "Europe/Warsaw"},
    }
    costs = {
        "describe_device, no cache": _per_call_microseconds(
            lambda i: uncached(agents[i % len(agents)]), 2_000
        ),
        "describe_device, cached": _per_call_microseconds(
            lambda i: describe_device(agents[i % len(agents)]), 50_000
        ),
        "describe_device, every string new": _per_call_microseconds(
            lambda i: describe_device(f"{CHROME_WINDOWS} build/{i}"), 2_000
        ),
        "describe_visit_source": _per_call_microseconds(
            lambda i: describe_visit_source(context["page"]["url"], "https://t.co/"), 20_000
        ),
        "resolve_timezone": _per_call_microseconds(lambda i: resolve_timezone(context), 50_000),
        "enrich_new_session, cached UA": _per_call_microseconds(
            lambda i: enrich_new_session(context, {"user-agent": agents[i % len(agents)]}),
            20_000,
        ),
    }
    with capsys.disabled():
        print()
        for name, micros in costs.items():
            print(f"  {name:36} {micros:8.2f} µs/call")
