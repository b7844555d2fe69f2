"""Per-app singletons (database, keys, OAuth, agreements), reached through the current app."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import current_app

if TYPE_CHECKING:
    from gateway.agreement_store import AgreementStore
    from gateway.config import Config
    from gateway.db import Database
    from gateway.keys import KeyStore
    from gateway.oauth import OAuth


def config() -> Config:
    return current_app.config["GATEWAY"]


def database() -> Database:
    return current_app.extensions["gateway.db"]


def keys() -> KeyStore:
    return current_app.extensions["gateway.keys"]


def oauth() -> OAuth:
    return current_app.extensions["gateway.oauth"]


def agreements() -> AgreementStore:
    return current_app.extensions["gateway.agreements"]
