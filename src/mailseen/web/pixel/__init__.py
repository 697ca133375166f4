"""The pixel edge: the framework-less ASGI endpoint that answers ``/t/<token>.gif`` inside
``mailseen serve`` (:mod:`.endpoint`), and the lean pixel-only node of ``mailseen pixel``
(:mod:`.node`). Both hand each hit to the services' view recorder and always answer with
the image."""
