"""The ``apprise`` notifier: Slack, Teams, PagerDuty, e-mail, ntfy, webhooks … for run states.

borgmatic's ``apprise`` section, so its users feel at home::

    apprise:
      services:
        - url: "slack://T000/B000/XXXX"
          label: ops-slack
      states: [fail]            # default: [fail]; any of start, finish, fail

Registered in the ``service_backup.hooks`` entry-point group, so this module is imported for
every run and by ``validate``: it holds only the registration. apprise itself (a large
dependency, about 0.2 s to import) is imported by ``send`` when a notification goes out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from service_backup.config import ConfigSection
from service_backup.hookspecs import hookimpl

from .config import SECTION, AppriseConfig, AppriseService

if TYPE_CHECKING:
    from service_backup.config import BackupConfig
    from service_backup.context import RunContext

__all__ = ["AppriseConfig", "AppriseService", "config_sections", "run_state"]


@hookimpl
def config_sections() -> list[ConfigSection]:
    return [ConfigSection(SECTION, AppriseConfig)]


@hookimpl
def run_state(config: BackupConfig, run: RunContext, state: str, error: str | None) -> None:
    settings: AppriseConfig | None = config.section(SECTION)
    if settings is None or state not in settings.states:
        return
    from .message import compose
    from .send import notify_all

    notify_all(settings, compose(config, run, state, error), log=run.log)
