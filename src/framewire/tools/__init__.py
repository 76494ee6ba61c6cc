"""The wire tools: proxy, capture decoding, ping, sockets, load generator,
the guide's raw echo programs and the Wireshark dissector."""
