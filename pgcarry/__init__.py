"""pgcarry: carry every production write across a test copy -> production overwrite.

The repository folders read as the data flow: ``capture`` (T0 and the streaming daemon) ->
``changelog`` (the durable log) -> ``replay`` (plan, apply, verify). ``schemas`` holds the
contracts they share and ``cli`` the verbs people type.
"""

__version__ = "0.1.0"
