"""pidgin-sipe, the Microsoft-family client, driven headless through libpurple.

purple_driver.c is a small libpurple client, compiled at test time (driver.py), that signs
one prpl-sipe account on and prints what happens as JSON lines; driver.py also runs
homeredirect servers and the client together inside a private network namespace.
"""
