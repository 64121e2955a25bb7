"""The only package that talks to SQLite: connections, migrations, and the queries by concern.

May import understand and the ground modules only.
"""
