"""The ``apprise`` section: which services to tell, and about which run states.

A service URL carries its credentials (a Slack webhook token, an SMTP password), so it is a
``Secret``: validation messages name the field (``apprise.services[1].url``), never the value.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

from service_backup.config import required
from service_backup.secret import Secret

SECTION = "apprise"
State = Literal["start", "finish", "fail"]


def _service_url(_: object, attribute: attrs.Attribute[Secret], value: Secret) -> None:
    """``scheme://…`` with a plain scheme; which schemes apprise knows is checked when sending
    (importing apprise here would cost every ``validate`` 0.2 s)."""
    text = value.reveal().strip()
    if not text:
        return  # "required field missing" is reported by the core
    scheme, sep, rest = text.partition("://")
    if not sep or not rest or not scheme.replace("+", "").replace("-", "").isalnum():
        raise ValueError(f"{attribute.name}: expected an apprise URL (scheme://...)")


def _positive(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name}: must be a whole number of seconds above 0")


def _some(_: object, attribute: attrs.Attribute[Any], value: tuple[Any, ...]) -> None:
    if not value:
        raise ValueError(f"{attribute.name}: list at least one service")


@attrs.frozen
class AppriseService:
    """One entry of ``services``: an apprise URL and the name logs and errors use for it."""

    url: Secret = required(validator=_service_url)  # noqa: RUF009 - an attrs field
    label: str = ""

    @property
    def scheme(self) -> str:
        """The URL's scheme (``slack``, ``mailtos``, ``json``): not a secret, helps operators."""
        return self.url.reveal().strip().partition("://")[0].lower()


@attrs.frozen
class AppriseConfig:
    """The ``apprise`` section. ``timeout_seconds`` bounds each service's delivery."""

    services: tuple[AppriseService, ...] = attrs.field(default=(), validator=_some)
    states: tuple[State, ...] = ("fail",)
    timeout_seconds: int = attrs.field(default=30, validator=_positive)

    def names(self) -> list[str]:
        """``<label> (<scheme>)`` per service, ``services[i]`` when it has no label."""
        return [
            f"{service.label.strip() or f'services[{index}]'} ({service.scheme})"
            for index, service in enumerate(self.services)
        ]
