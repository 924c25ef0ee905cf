"""The suite mirrors the packages; tests/e2e holds the line tests."""
