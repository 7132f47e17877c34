"""Which tracking hits come from machines rather than people.

Opens and clicks from machines are kept but flagged, so stats show human and
total figures. Signals, cheapest first: the HTTP method (link scanners often
send ``HEAD``), the user agent (privacy proxies and security gateways name
themselves) and the address (Apple Mail Privacy Protection fetches from
Apple's 17.0.0.0/8; Google's image proxy from Google ranges). Clicks within
seconds of sending are flagged by the ingester, which knows when a message
was sent.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

# Substrings of user agents, lower case, with the reason they stand for.
_AGENTS: tuple[tuple[str, str], ...] = (
    ("googleimageproxy", "google_image_proxy"),
    ("ggpht.com", "google_image_proxy"),
    ("yahoomailproxy", "yahoo_mail_proxy"),
    ("barracuda", "security_gateway"),
    ("mimecast", "security_gateway"),
    ("proofpoint", "security_gateway"),
    ("trendmicro", "security_gateway"),
    ("symantec", "security_gateway"),
    ("forcepoint", "security_gateway"),
    ("safelinks", "security_gateway"),
    ("microsoft office existence discovery", "security_gateway"),
    ("bingpreview", "link_preview"),
    ("slackbot", "link_preview"),
    ("python-requests", "bot"),
    ("curl/", "bot"),
    ("wget/", "bot"),
    ("headlesschrome", "bot"),
    ("phantomjs", "bot"),
    ("bot/", "bot"),
    ("crawler", "bot"),
    ("spider", "bot"),
)

# Apple's MPP proxies announce a bare "Mozilla/5.0" user agent; the address decides.
_NETWORKS: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.ip_network(net), reason)
    for net, reason in (
        ("17.0.0.0/8", "apple_mpp"),
        ("2620:149::/32", "apple_mpp"),
        ("2a01:b740::/32", "apple_mpp"),
        ("66.102.0.0/20", "google_image_proxy"),
        ("66.249.64.0/19", "google_image_proxy"),
        ("74.125.0.0/16", "google_image_proxy"),
        ("64.233.160.0/19", "google_image_proxy"),
        ("72.14.192.0/18", "google_image_proxy"),
    )
)


@lru_cache(maxsize=4096)
def _agent_reason(agent: str) -> str | None:
    lowered = agent.lower()
    for needle, reason in _AGENTS:
        if needle in lowered:
            return reason
    return None


@lru_cache(maxsize=65_536)
def _address_reason(address: str) -> str | None:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    for network, reason in _NETWORKS:
        if ip.version == network.version and ip in network:
            return reason
    return None


def classify(method: str, user_agent: str, address: str | None) -> str | None:
    """Why this hit looks automated, or None for a person."""
    if method == "HEAD":
        return "head_request"
    if not user_agent:
        return "no_user_agent"
    reason = _agent_reason(user_agent[:512])
    if reason is None and address:
        reason = _address_reason(address)
    return reason
