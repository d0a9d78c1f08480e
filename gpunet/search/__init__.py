"""Search: searchers (ask/tell over a pool of encodings) and synthetic objectives."""
