"""The bodies of the starter message types (``service.messages.starter``).

HTML with inline styles only (mail clients drop style sheets), tables for
layout, and every optional part behind an ``{% if %}`` so that a message sent
with the required data alone still reads well. They go through the same
validator as any type a sponsor writes. A loop never sits between table rows:
the HTML parser would move its tags out of the table (a loop repeats whole
one-row tables instead). Amounts are strings the application
formats (``"€120.00"``): currency and locale are its business, not ours.
``format`` is read as ``attributes["format"]`` (and ``preferences["format"]``):
``.format`` is refused by the sandbox, being a string method.
"""

from __future__ import annotations

_TABLE = 'role="presentation" cellpadding="6" cellspacing="0" style="border-collapse:collapse"'

# The format given with the message wins; else the recipient's preference for
# summaries (``preferences``, there when the sender renders; not in a preview).
_SUMMARY_PARTS = """\
{% set chosen = attributes["format"] or (preferences["format"] if preferences is defined) %}\
{% if chosen != "brief" %}
{% if attributes.key_points %}<h3 style="margin:20px 0 8px">Key points</h3>
<ul>{% for point in attributes.key_points %}<li>{{ point }}</li>{% endfor %}</ul>{% endif %}
{% if attributes.next_steps %}<h3 style="margin:20px 0 8px">Next steps</h3>
<ol>{% for step in attributes.next_steps %}<li>{{ step }}</li>{% endfor %}</ol>{% endif %}
{% endif %}"""


def _fill(body: str) -> str:
    return body.replace("__TABLE__", _TABLE).replace("__SUMMARY__", _SUMMARY_PARTS)


CONVERSATION_CUSTOMER = _fill("""\
<p>Hi {{ attributes.customer_name }},</p>
<p>Thank you for your time today. Here is a summary of our conversation.</p>
<div style="border-left:3px solid #d0d5dd;padding:4px 12px;margin:16px 0">
{{ attributes.summary }}</div>
__SUMMARY__
{% if attributes.conversation_url %}<p><a href="{{ attributes.conversation_url }}">\
Read the whole conversation</a></p>{% endif %}
<p>If anything here is not as you remember it, simply reply to this email.</p>
<p>Best regards,<br>The {{ sponsor.name }} team</p>
""")

CONVERSATION_TEAM = _fill("""\
<h2 style="margin:0 0 12px">Conversation with {{ attributes.customer_name }}</h2>
<table __TABLE__>
  <tr><td><strong>Customer</strong></td><td>{{ attributes.customer_name }}\
{% if attributes.customer_email %} &lt;<a href="mailto:{{ attributes.customer_email }}">\
{{ attributes.customer_email }}</a>&gt;{% endif %}</td></tr>
  <tr><td><strong>Score</strong></td><td>{{ attributes.score }}/100</td></tr>
</table>
<h3 style="margin:20px 0 8px">Summary</h3>
<p>{{ attributes.summary }}</p>
__SUMMARY__
{% if attributes.conversation_url %}<p><a href="{{ attributes.conversation_url }}">\
Open the conversation</a></p>{% endif %}
""")

ORDER_CONFIRMATION = _fill("""\
<p>Hi {{ attributes.customer_name }},</p>
<p>Thank you for your order. We have received it and will let you know as soon as it ships.</p>
<table __TABLE__ width="100%"><tr style="border-bottom:1px solid #d0d5dd">
  <th align="left" width="60%">Item</th><th align="right" width="15%">Qty</th>
  <th align="right" width="25%">Price</th></tr></table>
{% for line in attributes.line_items %}<table __TABLE__ width="100%">\
<tr style="border-bottom:1px solid #eaecf0"><td width="60%">{{ line.name }}</td>
  <td align="right" width="15%">{{ line.quantity }}</td>
  <td align="right" width="25%">{{ line.price }}</td></tr></table>{% endfor %}
<table __TABLE__ width="100%"><tr><td align="right" width="75%"><strong>Total</strong></td>
  <td align="right" width="25%"><strong>{{ attributes.total }}</strong></td></tr></table>
<p>Order number: <strong>{{ attributes.order_number }}</strong></p>
{% if attributes.order_url %}<p><a href="{{ attributes.order_url }}">\
View your order</a></p>{% endif %}
<p>Questions about your order? Reply to this email and we will help.</p>
<p>Best regards,<br>The {{ sponsor.name }} team</p>
""")

PAYMENT_RECEIPT = _fill("""\
<p>Hi {{ attributes.customer_name }},</p>
<p>We have received your payment. Thank you.</p>
<p style="border:1px solid #eaecf0;border-radius:6px;padding:12px 16px">\
<strong>Amount paid:</strong> {{ attributes.amount }}<br>
<strong>Receipt number:</strong> {{ attributes.receipt_number }}\
{% if attributes.paid_at %}<br>
<strong>Date:</strong> {{ attributes.paid_at }}{% endif %}\
{% if attributes.description %}<br>
<strong>For:</strong> {{ attributes.description }}{% endif %}\
{% if attributes.payment_method %}<br>
<strong>Paid with:</strong> {{ attributes.payment_method }}{% endif %}</p>
{% if attributes.receipt_url %}<p><a href="{{ attributes.receipt_url }}">\
Download your receipt</a></p>{% endif %}
<p>Keep this email for your records.</p>
<p>Best regards,<br>The {{ sponsor.name }} team</p>
""")

PAYMENT_FAILED = """\
<p>Hi {{ attributes.customer_name }},</p>
<p>We could not take your payment of <strong>{{ attributes.amount }}</strong>\
{% if attributes.description %} for {{ attributes.description }}{% endif %}.\
{% if attributes.reason %} Your bank or card issuer said: {{ attributes.reason }}.{% endif %}</p>
<p>Nothing is lost: you can try again with the same or another payment method.</p>
<p style="margin:24px 0"><a href="{{ attributes.retry_url }}" \
style="background:#1d4ed8;color:#ffffff;padding:12px 20px;border-radius:6px;\
text-decoration:none;display:inline-block">Retry your payment</a></p>
<p>If the button does not work, copy this address into your browser:<br>\
{{ attributes.retry_url }}</p>
<p>Need help? Reply to this email.</p>
<p>Best regards,<br>The {{ sponsor.name }} team</p>
"""

CANCELLATION_CONFIRMATION = """\
<p>Hi {{ attributes.customer_name }},</p>
<p>This confirms that {{ attributes.cancelled_item }} has been cancelled\
{% if attributes.effective_at %}, effective {{ attributes.effective_at }}{% endif %}.</p>
{% if attributes.refund_amount %}<p>A refund of <strong>{{ attributes.refund_amount }}</strong> \
is on its way to your original payment method; it can take a few days to appear.</p>{% endif %}
<p>We are sorry to see you go. If you cancelled by mistake or change your mind, \
{% if attributes.return_url %}<a href="{{ attributes.return_url }}">you can come back here</a>\
{% else %}simply reply to this email{% endif %}.</p>
<p>Best regards,<br>The {{ sponsor.name }} team</p>
"""
