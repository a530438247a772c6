"""A package that exists only on the master: children must import it over the wire."""

from mitogen_test_wirepkg import helper

VALUE = "wirepkg"


def where():
    return __file__, helper.where()
