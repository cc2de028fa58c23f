"""IPAM errors. Their text goes to the operator verbatim: name the object and the cause."""


class IpamError(Exception):
    """A request the IPAM refuses; the message is shown by `docker` as is."""


class InvalidRequest(IpamError):
    pass


class PoolNotFound(IpamError):
    pass


class PoolOverlap(IpamError):
    pass


class PoolExhausted(IpamError):
    pass


class AddressInUse(IpamError):
    pass


class AddressOutOfPool(IpamError):
    pass
