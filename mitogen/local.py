"""Connection method `local`: a new interpreter on this machine."""

import mitogen.parent


class Options(mitogen.parent.Options):
    """Options of `router.local()`; `python_path` defaults to this
    interpreter."""


class Connection(mitogen.parent.Connection):
    """Run `python_path -c <stage 0>` as a direct child."""

    options_class = Options
    name_prefix = "local"
