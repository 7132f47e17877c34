"""The bytes of one SMTP message: headers, MIME parts, ``Message-ID`` and DKIM.

A message with attachments is ``multipart/mixed`` around the body and the
files; inline files (those with a ``content_id``) go with the HTML in a
``multipart/related`` part, each with its ``Content-ID``.

Every message carries a ``Message-ID`` derived from its delivery row, so a
copy sent again after a crash has the same ``Message-ID`` as the first one
(see ``worker.providers.smtp`` for why that matters). Header values rendered
from a lead's data are made safe for the wire here: no line break in them can
inject a header.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from email.header import Header
from email.utils import formataddr, formatdate, parseaddr
from urllib.parse import quote

import dkim
import dkim.crypto

from service.messages.attachments import Attachment
from worker.providers.base import OutgoingEmail

__all__ = ["DKIMSigner", "build_message", "dkim_signer_from", "message_id"]

# Signed when present, in this order (RFC 6376 §5.4, RFC 8058 §4).
DKIM_HEADERS = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
)


def message_id(email: OutgoingEmail, domain: str) -> str:
    """The ``Message-ID`` of a delivery: the same for every copy of that delivery."""
    campaign = email.campaign_id.replace("-", "")
    return f"<{email.delivery_id}.{campaign}@{domain}>"


@dataclass(frozen=True, slots=True)
class DKIMSigner:
    """Signs messages with ``dkimpy`` (relaxed/relaxed, rsa-sha256)."""

    selector: str
    domain: str
    private_key: bytes  # PEM

    def sign(self, message: bytes, headers: Sequence[str]) -> bytes:
        """``message`` with a ``DKIM-Signature`` over ``headers`` in front."""
        include = [name.encode() for name in headers]
        signature = dkim.sign(
            message,
            self.selector.encode(),
            self.domain.encode(),
            self.private_key,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=include,
        )
        return bytes(signature) + message


def build_message(
    email: OutgoingEmail, message_id_domain: str, dkim_signer: DKIMSigner | None = None
) -> tuple[str, bytes]:
    """The message id (without brackets) and the bytes to send, signed when DKIM is on.

    Written by hand rather than with ``email.message.EmailMessage``, whose
    header objects cost ~4 ms a message; the structure is always the same
    (one part, or ``multipart/alternative`` of text and HTML, both
    quoted-printable UTF-8).
    """
    mid = message_id(email, message_id_domain)
    headers: dict[str, str] = {
        "From": _address_header(email.sender),
        "To": _address_header(email.to),
        "Subject": _header_value(email.subject),
        "Date": formatdate(localtime=False, usegmt=True),
        "Message-ID": mid,
    }
    if email.cc:
        headers["Cc"] = ", ".join(_address_header(address) for address in email.cc)
    # Bcc addresses are envelope recipients only (``SMTPProvider``): a header would
    # show them to everyone.
    if email.reply_to:
        headers["Reply-To"] = _address_header(email.reply_to)
    canonical = {name.lower(): name for name in headers}
    for name, value in email.headers.items():
        clean = _header_name(name)
        headers.pop(canonical.get(clean.lower(), clean), None)
        headers[clean] = _header_value(value)
        canonical[clean.lower()] = clean
    headers["MIME-Version"] = "1.0"
    lines = [f"{name}: {value}" for name, value in headers.items()]
    entity = _body_entity(email)
    if email.attachments:
        entity = _with_attachments(entity, email.attachments, bool(email.text))
    raw = "\r\n".join(lines).encode() + b"\r\n" + entity
    if dkim_signer is not None:
        present = {name.lower() for name in headers}
        raw = dkim_signer.sign(raw, [h for h in DKIM_HEADERS if h.lower() in present])
    # The stored id is this Message-ID; the deliveries column holds 100 characters.
    return mid.strip("<>")[:100], raw


def _body_entity(email: OutgoingEmail) -> bytes:
    """The text and HTML, with their ``Content-Type`` header, ending in CRLF."""
    if not email.text:
        return _HTML_PART + _qp(email.html) + b"\r\n"
    return _multipart(
        "alternative",
        [_TEXT_PART + _qp(email.text) + b"\r\n", _HTML_PART + _qp(email.html) + b"\r\n"],
    )


def _multipart(subtype: str, parts: Sequence[bytes], params: str = "") -> bytes:
    """A ``multipart/<subtype>`` entity of ``parts`` (each with its headers, ending in CRLF)."""
    boundary = f"=_{uuid.uuid4().hex}"  # "=_" never occurs in QP or base64
    dash = b"--" + boundary.encode()
    # Folded: one line would pass the 78 characters RFC 5322 asks for.
    head = f'Content-Type: multipart/{subtype};\r\n boundary="{boundary}"{params}\r\n\r\n'
    out = [head.encode()]
    for part in parts:
        out += (dash, b"\r\n", part)
    out.append(dash + b"--\r\n")
    return b"".join(out)


def _with_attachments(body: bytes, attachments: Sequence[Attachment], alternative: bool) -> bytes:
    """``multipart/mixed`` of the body (with its inline files in ``multipart/related``)
    and the other files."""
    inline = [_attachment_part(a) for a in attachments if a.content_id is not None]
    files = [_attachment_part(a) for a in attachments if a.content_id is None]
    if inline:
        root = "multipart/alternative" if alternative else "text/html"
        body = _multipart("related", [body, *inline], f';\r\n type="{root}"')
    if files:
        body = _multipart("mixed", [body, *files])
    return body


def _attachment_part(attachment: Attachment) -> bytes:
    content_type = attachment.content_type
    if not _MIME_TYPE.fullmatch(content_type):
        content_type = "application/octet-stream"
    disposition = "attachment" if attachment.content_id is None else "inline"
    lines = [
        f"Content-Type: {content_type};\r\n {_param('name', attachment.filename)}",
        "Content-Transfer-Encoding: base64",
        f"Content-Disposition: {disposition};\r\n {_param('filename', attachment.filename)}",
    ]
    if attachment.content_id is not None:
        lines.append(f"Content-ID: <{_NOT_IN_CONTENT_ID.sub('', attachment.content_id)}>")
    # encodebytes: lines of 76 characters, as RFC 2045 asks.
    content = base64.encodebytes(attachment.content).replace(b"\n", b"\r\n") or b"\r\n"
    return "\r\n".join(lines).encode() + b"\r\n\r\n" + content


def _param(name: str, value: str) -> str:
    """A header parameter: quoted when short plain ASCII, else RFC 2231 UTF-8 in pieces
    (a long or non-ASCII file name would otherwise make a line too long for SMTP)."""
    value = _LINE_BREAKS.sub(" ", value)
    plain = value.isascii() and value.isprintable() and len(value) <= _PARAM_PIECE
    if plain and '"' not in value and "\\" not in value:
        return f'{name}="{value}"'
    pieces = [""]
    for char in value:
        quoted = quote(char, safe="")  # a character at a time: its %XX is never cut
        if len(pieces[-1]) + len(quoted) > _PARAM_PIECE:
            pieces.append("")
        pieces[-1] += quoted
    pieces[0] = "utf-8''" + pieces[0]
    return ";\r\n ".join(f"{name}*{n}*={piece}" for n, piece in enumerate(pieces))


_TEXT_PART = (
    b'Content-Type: text/plain; charset="utf-8"\r\n'
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
)
_HTML_PART = (
    b'Content-Type: text/html; charset="utf-8"\r\n'
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
)
_LINE_BREAKS = re.compile(r"\r\n|\r|\n")
_MIME_TYPE = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
)
_NOT_IN_CONTENT_ID = re.compile(r"[^!-;=?-~]")  # printable ASCII except "<" and ">"
_PARAM_PIECE = 50  # a piece and its name stay within 78 characters a line
_NOT_A_HEADER_NAME = re.compile(r"[^!-9;-~]")  # RFC 5322: printable ASCII except ":"


def _qp(text: str) -> bytes:
    """Quoted-printable UTF-8 with CRLF line ends and lines of at most 76 characters."""
    data = _LINE_BREAKS.sub("\r\n", text).encode()
    return binascii.b2a_qp(data, istext=True, header=False)


def _header_name(name: str) -> str:
    clean = _NOT_A_HEADER_NAME.sub("", name)
    if not clean:
        raise ValueError(f"not a header name: {name!r}")
    return clean


def _header_value(value: str) -> str:
    """One header's value, safe to put on the wire.

    Line breaks become spaces (a subject rendered from a lead's data must not
    inject a header); non-ASCII text becomes RFC 2047 encoded words; a long
    value is folded.
    """
    value = _LINE_BREAKS.sub(" ", value)
    if value.isascii() and len(value) <= 900:
        return value
    return Header(value, "utf-8" if not value.isascii() else "us-ascii").encode(
        linesep="\r\n", maxlinelen=76
    )


def _address_header(value: str) -> str:
    """``Name <address>`` with the name encoded when it is not ASCII."""
    value = _LINE_BREAKS.sub(" ", value)
    if value.isascii():
        return value
    name, address = parseaddr(value)
    return formataddr((name, address), charset="utf-8")


def dkim_signer_from(
    selector: str | None, domain: str | None, key_pem: str | None, key_path: str | None
) -> DKIMSigner | None:
    """The signer the settings describe; None when DKIM is off, an error when half set."""
    if not (selector or domain or key_pem or key_path):
        return None
    if not (selector and domain and (key_pem or key_path)):
        raise RuntimeError(
            "DKIM needs DKIM_SELECTOR, DKIM_DOMAIN and DKIM_PRIVATE_KEY or DKIM_PRIVATE_KEY_PATH"
        )
    if key_pem:
        key = key_pem.encode()
    else:
        assert key_path is not None
        with open(key_path, "rb") as handle:
            key = handle.read()
    try:
        dkim.crypto.parse_pem_private_key(key)
    except Exception as exc:  # dkimpy raises several kinds for a bad key
        raise RuntimeError(f"the DKIM private key is not a PEM RSA key: {exc}") from exc
    return DKIMSigner(selector=selector, domain=domain, private_key=key)
