"""Daily digests: a team member's summary on a cron schedule in their time zone."""
