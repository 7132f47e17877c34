"""Delivery: the core any message kind sends through, and a campaign's use of it.

``core`` renders, paces and sends; ``context`` caches what a campaign needs;
``guards`` pause or hold a campaign; ``retry`` parks and dead-letters batches;
``batches`` puts them together for ``campaign-batches.v1``.
"""
