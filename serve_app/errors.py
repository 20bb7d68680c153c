"""Errors the HTTP API turns into a status code of their own."""


class UnusableSource(Exception):
    """Something a request names (a model ref, a reference image URL) that cannot be used.

    ``status_code`` says whose fault it is: the client's (4xx) or the source's (502).
    """

    status_code = 422
