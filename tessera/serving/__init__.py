"""Running the ASGI application: one process, or several on one listening socket."""
