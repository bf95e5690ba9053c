"""Joining the conversation from a browser: one-time access codes, device sessions, room tokens, the web service."""
