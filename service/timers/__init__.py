"""Durable timers: rows due at a time, fired once by the timers loop."""
