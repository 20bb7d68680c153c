"""Media for answers, without HTTP: signed, short-lived URLs of stored objects put into bodies."""
