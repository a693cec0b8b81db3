"""A stand-in for `ntlm_auth --helper-protocol=ntlm-server-1`, for the unit tests of
homeredirect.auth.ntlm.winbind: a real process speaking the protocol on stdin/stdout.

It checks NTLMv2 responses for EXAMPLE\\alice (and `chunked`), password Secret123,
with real NTLMv2 arithmetic, and answers as Samba 4.17's ntlm_auth does, including the
second "." Samba writes after `Authenticated: No`. Some user names make it misbehave:

- `crash`: exits (status 3) without answering;
- `hang`: never answers;
- `garbage`: answers a line that is not part of the protocol;
- `nokey`: answers `Authenticated: Yes` without a session key;
- `longline`: answers one 10000-byte line;
- `chunked`: answers as for alice, but one byte per write.

`--exit-at-start` makes it exit at once (a helper that cannot start); the last argument
must be the helper protocol option, as the checker appends it.
"""

from __future__ import annotations

import base64
import os
import sys

from homeredirect.auth.ntlm.keys import nt_hash, ntlmv2_session_base_key

USERS = ("alice", "chunked")
DOMAIN = "EXAMPLE"
PASSWORD = "Secret123"


def write(text: str, chunked: bool = False) -> None:
    data = text.encode()
    if chunked:
        for i in range(len(data)):
            os.write(1, data[i : i + 1])
    else:
        os.write(1, data)


def answer(fields: dict[str, str]) -> None:
    user = fields.get("Username", "")
    if user == "crash":
        sys.exit(3)
    if user == "hang":
        return
    if user == "garbage":
        write("Something else entirely\n.\n")
        return
    if user == "nokey":
        write("Authenticated: Yes\n.\n")
        return
    if user == "longline":
        write("A" * 10_000 + "\n")
        return
    if fields.get("Request-User-Session-Key") != "Yes":
        write("Error: the checker always asks for the session key\n.\n")
        return
    challenge = bytes.fromhex(fields["LANMAN-Challenge"])
    response = bytes.fromhex(fields["NT-Response"])
    domain = fields.get("NT-Domain", "EXAMPLE")
    key = None
    if user.lower() in USERS and domain.upper() == DOMAIN:
        key = ntlmv2_session_base_key(nt_hash(PASSWORD), user, domain, challenge, response)
    if key is None:
        write("Authenticated: No\nAuthentication-Error: Wrong Password (0xc000006a)\n.\n.\n")
        return
    write(f"Authenticated: Yes\nUser-Session-Key: {key.hex().upper()}\n.\n", user == "chunked")


def main() -> None:
    if sys.argv[-1] != "--helper-protocol=ntlm-server-1":
        sys.exit("fake ntlm_auth: expected --helper-protocol=ntlm-server-1 last")
    if "--exit-at-start" in sys.argv:
        sys.exit("fake ntlm_auth: told to fail at start")
    fields: dict[str, str] = {}
    for raw in sys.stdin:
        line = raw.rstrip("\n")
        if line == ".":
            answer(fields)
            fields = {}
            continue
        if ":: " in line:
            name, _, value = line.partition(":: ")
            value = base64.b64decode(value).decode()
        else:
            name, _, value = line.partition(": ")
        fields[name] = value


if __name__ == "__main__":
    main()
