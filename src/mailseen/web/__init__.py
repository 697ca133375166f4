"""HTTP adapters: the pixel endpoint (plain ASGI, no framework on the hot path) and the
REST API. Only this package knows the web framework."""
