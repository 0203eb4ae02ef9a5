"""Channels: email, letter, telephone, SMTP and addressing; handed what they need, never the App."""
