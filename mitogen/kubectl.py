"""Connection method `kubectl`: a context inside a container of a
Kubernetes pod, through `kubectl exec -i` (no tty)."""

import mitogen.container


class KubectlError(mitogen.container.ContainerError):
    """kubectl could not start the interpreter in the pod."""


class Options(mitogen.container.Options):
    """Options of `router.kubectl()`.

    :param str pod: the pod.
    :param str container: the container within the pod (default: the
        pod's default container).
    :param list kubectl_args: global kubectl flags (e.g. ['-n', 'ns',
        '--context', 'c']).
    :param str kubectl_path: the kubectl program to run.
    """

    def __init__(
        self, max_message_size, pod=None, kubectl_args=None, kubectl_path="kubectl", **kwargs
    ):
        if not pod:
            raise KubectlError("kubectl needs pod=")
        super().__init__(max_message_size, **kwargs)
        self.pod = pod
        self.kubectl_args = list(kubectl_args or ())
        self.kubectl_path = kubectl_path


class Connection(mitogen.container.Connection):
    """Run `kubectl [ARGS] exec -i POD [-c CONTAINER] -- python -c <stage 0>`."""

    options_class = Options
    name_prefix = "kubectl"
    error = KubectlError

    def target(self):
        opts = self.options
        return opts.pod + ("/" + opts.container if opts.container else "")

    def target_phrase(self):
        opts = self.options
        where = "container %r of " % (opts.container,) if opts.container else ""
        return "%spod %r" % (where, opts.pod)

    def get_boot_command(self):
        opts = self.options
        container = ["-c", opts.container] if opts.container else []
        return (
            [opts.kubectl_path]
            + opts.kubectl_args
            + ["exec", "-i", opts.pod]
            + container
            + ["--"]
            + self.python_command()
        )
