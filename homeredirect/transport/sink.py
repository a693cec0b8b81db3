"""The one interface through which every transport hands messages to the core."""

from __future__ import annotations

from zope.interface import Interface

from homeredirect.sip.message import Message
from homeredirect.sip.parser import MessageRejected
from homeredirect.transport.flows import IFlow


class IMessageSink(Interface):
    """Receives what the parsers produce, with the flow it arrived on."""

    def message_received(message: Message, flow: IFlow) -> None:
        """A well-formed request or response."""

    def message_rejected(event: MessageRejected, flow: IFlow) -> None:
        """A malformed message: answer it (requests) or drop it (responses)."""
