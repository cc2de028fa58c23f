"""Network driver errors. Their text reaches the operator through `docker`."""


class DriverError(Exception):
    """A request the network driver refuses."""


class InvalidRequest(DriverError):
    pass


class NotFound(DriverError):
    pass


class Conflict(DriverError):
    pass


class KernelError(DriverError):
    """The kernel or the firewall refused an operation."""
