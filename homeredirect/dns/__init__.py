"""The home-server directory service: the DNS records by which SIP clients find a first
server (`records`), served authoritatively with twisted.names (`server`) or printed as a BIND
zone fragment (`zonefile`) by the `homeredirect dns` and `homeredirect zone` commands."""
