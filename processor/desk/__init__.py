"""The desk's own logic: one poll as a pipeline, the registry's seat rules, the outbox, reminders,
the digest and the organisers' actions.

May import mail, store, understand and the ground modules (config, clock, display, logs, names, progress, resources).
"""
