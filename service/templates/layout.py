"""The message layout: a 600 px, table-based, dark-mode friendly shell with a footer.

The shell is plain HTML with markers (``{content}``, ``{footer}``, …) filled in
by ``compiled.compile_message``; its CSS is inlined at compile time, except the
media queries (small screens, dark mode), which only work from a ``<style>``.
"""

from __future__ import annotations

FONTS = "-apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif"

# Inlined into style attributes by css-inline (what every mail client reads).
INLINE_CSS = """
body { margin: 0; padding: 0; background-color: #f4f5f7; color: #1f2328;
       -webkit-text-size-adjust: 100%; text-size-adjust: 100%; }
.wrapper { width: 100%; background-color: #f4f5f7; }
.outer { padding: 24px 12px; }
.container { width: 600px; max-width: 600px; background-color: #ffffff; border-radius: 6px; }
.content { padding: 32px 32px 16px 32px; font-family: {fonts}; font-size: 16px;
           line-height: 1.6; color: #1f2328;
           text-align: start; }
.content p { margin: 0 0 16px 0; }
.content a { color: #0b5cad; text-decoration: underline; }
.content ul, .content ol { margin: 0 0 16px 0; padding-left: 24px; }
.content li { margin: 0 0 6px 0; }
.content h1, .content h2, .content h3 { margin: 0 0 12px 0; line-height: 1.3; color: #111418; }
.content img { max-width: 100%; height: auto; border: 0; }
.footer { padding: 16px 32px 32px 32px; font-family: {fonts}; font-size: 12px;
          line-height: 1.5; color: #57606a;
          border-top: 1px solid #e5e7eb; }
.footer p { margin: 0 0 8px 0; }
.footer a { color: #57606a; text-decoration: underline; }
""".replace("{fonts}", FONTS)

# Kept in a <style> block: media queries cannot be inlined.
MEDIA_CSS = """
@media only screen and (max-width: 620px) {
  .container { width: 100% !important; }
  .content, .footer { padding-left: 20px !important; padding-right: 20px !important; }
}
@media (prefers-color-scheme: dark) {
  body, .wrapper { background-color: #0d1117 !important; }
  .container { background-color: #161b22 !important; }
  .content, .content h1, .content h2, .content h3 { color: #e6edf3 !important; }
  .content a { color: #58a6ff !important; }
  .footer, .footer a { color: #9da7b3 !important; border-color: #30363d !important; }
}
"""

SHELL = """<!DOCTYPE html>
<html lang="{lang}" dir="auto">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="x-apple-disable-message-reformatting">
<meta name="color-scheme" content="light dark">
<meta name="supported-color-schemes" content="light dark">
<title>{title}</title>
<meta name="x-media-css">
</head>
<body>
<table role="presentation" class="wrapper" width="100%" cellpadding="0" cellspacing="0" border="0">
<tr><td align="center" class="outer">
<table role="presentation" class="container" width="600" cellpadding="0" cellspacing="0" border="0">
<tr><td class="content" dir="auto">
{content}
</td></tr>
<tr><td class="footer" dir="auto">
{footer}
</td></tr>
</table>
</td></tr>
</table>
{pixel}
</body>
</html>
"""

# Jinja source; the sponsor's values are variables (never spliced into the source).
_FOOTER_HTML = (
    "<p>{{ sponsor.name }} · {{ sponsor.postal_address }}</p>\n"
    "<p>You are receiving this email because you shared your contact details with "
    "{{ sponsor.name }}{% if event.name %} at {{ event.name }}{% endif %}.</p>\n"
    "<p>{links}"
    '<a href="{{ view_in_browser_url }}">View this email in your browser</a></p>'
)

_FOOTER_TEXT = (
    "\n\n--\n"
    "{{ sponsor.name }} · {{ sponsor.postal_address }}\n"
    "You are receiving this email because you shared your contact details with "
    "{{ sponsor.name }}{% if event.name %} at {{ event.name }}{% endif %}.\n"
    "{links}"
    "View this email in your browser: {{ view_in_browser_url }}\n"
)

# Every message that follows a preference (campaigns, marketing and notification
# messages) links to its unsubscribe and to the preference centre. A transactional
# message belongs to no list and follows no preference: neither link.
FOOTER_HTML = _FOOTER_HTML.replace(
    "{links}",
    '<a href="{{ unsubscribe_url }}">Unsubscribe</a> · '
    '<a href="{{ preferences_url }}">Manage preferences</a> · ',
)
FOOTER_TEXT = _FOOTER_TEXT.replace(
    "{links}",
    "Unsubscribe: {{ unsubscribe_url }}\nManage preferences: {{ preferences_url }}\n",
)
TRANSACTIONAL_FOOTER_HTML = _FOOTER_HTML.replace("{links}", "")
TRANSACTIONAL_FOOTER_TEXT = _FOOTER_TEXT.replace("{links}", "")

PIXEL = (
    '<img src="{{ _pixel }}" width="1" height="1" alt="" '
    'style="display:block;border:0;width:1px;height:1px;overflow:hidden">'
)


def preheader(escaped: str) -> str:
    """The preview line mail clients show after the subject, hidden in the message itself."""
    return (
        '<div style="display:none;max-height:0;overflow:hidden;mso-hide:all" aria-hidden="true">'
        f"{escaped}</div>"
    )
