"""Real storage engines the tests start and stop themselves."""
