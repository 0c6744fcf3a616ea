"""The commands a user types, one click script each (`python -m stages.<name> --help`).

Importing this package, which every command does first, quiets the upstream messages a user
cannot act on (lib/console.py `quiet_upstream_messages`) before a command's own imports
could print one.
"""

from lib.console import quiet_upstream_messages

quiet_upstream_messages()
