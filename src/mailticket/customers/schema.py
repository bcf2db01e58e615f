"""What a customer is, as an admin writes it: the YAML file's items and the API's bodies
are validated by the same models, so both paths accept exactly the same customers."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mailticket.reading.maildomains import (
    InvalidDomain,
    normalise_address,
    normalise_domain,
)

KEY_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"

CustomerKey = Annotated[str, Field(pattern=KEY_PATTERN)]


class ContactSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str
    name: str | None = None

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        try:
            return normalise_address(value)
        except InvalidDomain as exc:
            raise ValueError(str(exc)) from None


class CustomerSpec(BaseModel):
    """One customer (organisation). `key` is its stable name: workflows (`customer: acme`)
    and SLA policies refer to it. `id` pins the numeric id tickets carry (the seed's
    `customer_id`), e.g. to keep ids from an earlier system; without it one is assigned."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: CustomerKey
    name: str = Field(min_length=1, max_length=500)
    id: int | None = Field(default=None, ge=1, le=2**31 - 1)
    active: bool = True
    domains: tuple[str, ...] = ()
    contacts: tuple[ContactSpec, ...] = ()

    @field_validator("domains", mode="before")
    @classmethod
    def _domains(cls, value: Any) -> Any:
        if not isinstance(value, list | tuple):
            return value
        out = []
        for item in value:
            if not isinstance(item, str):
                raise ValueError(f"a domain is text like example.com (got {item!r})")
            text = item.strip()
            if text.startswith(("*.", "@")):
                raise ValueError(
                    f"{item!r}: write the bare domain; a domain covers its subdomains"
                )
            try:
                out.append(normalise_domain(text))
            except InvalidDomain as exc:
                raise ValueError(str(exc)) from None
        return out

    @field_validator("contacts", mode="before")
    @classmethod
    def _contacts(cls, value: Any) -> Any:
        # `- jane@acme.example` is shorthand for `- address: jane@acme.example`.
        if isinstance(value, list | tuple):
            return [{"address": item} if isinstance(item, str) else item for item in value]
        return value

    @model_validator(mode="after")
    def _no_repeats(self) -> CustomerSpec:
        for what, values in (
            ("domain", list(self.domains)),
            ("contact", [c.address for c in self.contacts]),
        ):
            seen: set[str] = set()
            for value in values:
                if value in seen:
                    raise ValueError(f"{what} {value!r} is listed twice")
                seen.add(value)
        return self


class CustomersFileSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # None: `customers:` with nothing under it, deliberately no customers.
    customers: list[Any] | None
