The server is configured by a TOML file (see ``examples/director.toml``); any mistake, including a misspelt key, stops start-up with one line naming the file, the key and what was expected.
