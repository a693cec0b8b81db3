"""RFC 3261 §17 transactions: the server side (§17.2) and its timers."""

from homeredirect.transaction.keys import TransactionKey, server_transaction_key
from homeredirect.transaction.server import (
    DuplicateTransaction,
    InviteServerTransaction,
    NonInviteServerTransaction,
    ServerTransaction,
    ServerTransactionTable,
    UndefinedTransition,
)
from homeredirect.transaction.timers import FixedDelayQueue, TimerHandle, TimerSettings

__all__ = [
    "DuplicateTransaction",
    "FixedDelayQueue",
    "InviteServerTransaction",
    "NonInviteServerTransaction",
    "ServerTransaction",
    "ServerTransactionTable",
    "TimerHandle",
    "TimerSettings",
    "TransactionKey",
    "UndefinedTransition",
    "server_transaction_key",
]
