"""The commands for three audiences: the worker, the organisers and the IT colleague.

May import every other package; nothing imports commands.
"""
