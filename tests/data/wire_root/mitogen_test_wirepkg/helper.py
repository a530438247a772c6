"""Imported by the package __init__, so it is sent ahead as a related module."""


def where():
    return __file__
