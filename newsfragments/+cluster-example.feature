`make cluster` (examples/cluster/run.py) starts a director, two home servers and the DNS service on 127.0.0.1 with one command, and stops them all on Ctrl-C.
