//! Helpers for the acceptance tests: start the real binaries on loopback.
