"""Commands that read what the destinations hold: one module per command.

Each module has ``HELP`` (one line), ``configure(parser)`` adding its flags (the CONFIG
argument is already there) and ``run(args) -> int`` returning the exit status; ``cli`` lists
them in ``COMMAND_MODULES``. Exit status 2 is an invalid config or bad arguments.
"""
