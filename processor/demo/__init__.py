"""The demo: embedded IMAP and SMTP servers on loopback, and the sample mails and mails it shows.

May import desk, mail, store, understand and the ground modules; only commands import it.
"""
