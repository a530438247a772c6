"""The tutorial's example service (see tutorial.py)."""

import mitogen.core
import mitogen.service


# [service-class]
class Greeter(mitogen.service.Service):
    """Started in a context on the first call from its parent."""

    @mitogen.service.expose(mitogen.service.AllowParents())
    def greet(self, name):
        return "hello, %s, from context %d" % (name, mitogen.context_id)


# [service-class]
