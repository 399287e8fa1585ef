"""The HTTP/1.1 data path: asyncio protocols on uvloop with httptools on both sides."""
