"""The adapters to mail systems: IMAP, SMTP, OAuth2 sign-in, building mails and calendar files.

May import store, understand and the ground modules; never desk, demo or commands.
"""
