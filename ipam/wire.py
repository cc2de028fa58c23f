"""IpamDriver wire models: what Docker sends and what pynet answers.

Field names are Docker's. Requests are strict about types and tolerate extra
fields (newer engines add some); validation errors name the field.
"""

from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field


class Request(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CapabilitiesResponse(Response):
    RequiresMACAddress: bool = False
    RequiresRequestReplay: bool = False


class AddressSpacesResponse(Response):
    LocalDefaultAddressSpace: str
    GlobalDefaultAddressSpace: str


class RequestPoolRequest(Request):
    AddressSpace: str = ""
    Pool: str = ""
    SubPool: str = ""
    Options: Optional[dict[str, str]] = None
    V6: bool = False


class RequestPoolResponse(Response):
    PoolID: str
    Pool: str
    Data: dict[str, str] = Field(default_factory=dict)


class ReleasePoolRequest(Request):
    PoolID: str


class RequestAddressRequest(Request):
    PoolID: str
    Address: str = ""
    Options: Optional[dict[str, str]] = None


class RequestAddressResponse(Response):
    Address: str
    Data: dict[str, Any] = Field(default_factory=dict)


class ReleaseAddressRequest(Request):
    PoolID: str
    Address: str


class Empty(Response):
    pass
