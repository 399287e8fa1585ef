"""ambient-gateway L7 gateway: Gateway API routing on a fast asyncio data path."""
