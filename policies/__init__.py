"""Information-sharing agreements: the file format and loader, the compiled decision engine,
disclosure (field filtering and generalisation) and per-recipient pseudonyms.

Pure Python with no dependency on the gateway, its database or Flask, so every rule about who
may see what can be tested, and explained to an auditor, on its own.
"""
