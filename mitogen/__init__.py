"""Mitogen: start Python interpreters anywhere a command runs, and talk to them.

This package file is part of the bootstrap bundle sent to every new context, so
it stays tiny and standard-library only.
"""

__version__ = (0, 1, 0)

#: True in the process that created the first Router (the master), False in
#: every context started by it.
is_master = True

#: This context's ID: 0 in the master, a positive integer in children.
context_id = 0

#: The ID of the context that started this one, or None in the master.
parent_id = None

#: IDs of every ancestor of this context, nearest first.
parent_ids = []

#: The compressed bootstrap bundle this context was started from, kept to
#: start grandchildren (set by mitogen.core.ExternalContext; built lazily in
#: the master by mitogen.parent.get_preamble()).
preamble = None


def main(log_level="INFO", profiling=False):
    """Decorate the main function of a program that uses Mitogen.

    When the decorated function's module is running as ``__main__``, logging is
    set up, a Broker and Router are created, the function is called with the
    Router, and everything is shut down when it returns. When the module is
    imported anywhere else (notably in a child context fetching ``__main__``
    over the wire) the function is returned untouched and nothing runs.
    """

    def wrapper(func):
        if func.__module__ != "__main__":
            return func
        import mitogen.utils

        mitogen.utils.log_to_file(level=log_level)
        if profiling:
            import cProfile

            profiler = cProfile.Profile()
            try:
                return profiler.runcall(mitogen.utils.run_with_router, func)
            finally:
                profiler.dump_stats("mitogen.main.pstats")
        return mitogen.utils.run_with_router(func)

    return wrapper
