"""Appointment emails with a calendar invite (booked, moved, cancelled) and their reminders."""
