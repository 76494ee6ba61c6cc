"""The protocol core: messages, the sans-I/O decoder, errors and limits.

No sockets, clocks, threads or module-level mutable state: everything here
is a pure function of its inputs, so it is tested without a network and
shared by every loop above it.
"""
