"""Calls to other systems (destinations, workflow actions): the request-forgery policy and the
clients that obey it."""
