"""The API's routers, one per concern: reads, writes, admin, operations."""
