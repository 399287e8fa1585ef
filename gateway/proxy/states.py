"""The states of an exchange, which its stages read.

``WAITING``: no response byte has reached the client (stages run, tries and retries happen).
``STREAMING``: the response head went to the client. ``TUNNEL``: the connection was upgraded
(WebSocket) and bytes are spliced both ways. ``DONE``: finished and accounted for.
"""

WAITING, STREAMING, TUNNEL, DONE = 0, 1, 2, 3
