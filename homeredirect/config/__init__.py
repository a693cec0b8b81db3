"""Configuration: `load_config(path)` reads a TOML file into a frozen, validated `Config`."""

from homeredirect.config.errors import ConfigError
from homeredirect.config.load import load_config, parse_config
from homeredirect.config.schema import Config, HomeServer

__all__ = ["Config", "ConfigError", "HomeServer", "load_config", "parse_config"]
