"""The controller: config, ledger, campaign loop, scheduler and CLI."""

from selflab.controller.config import ConfigError, ConfigFault, LabConfig, load_config, parse_config
from selflab.controller.ledger import Ledger, LedgerError

__all__ = ["ConfigError", "ConfigFault", "LabConfig", "Ledger", "LedgerError", "load_config", "parse_config"]
