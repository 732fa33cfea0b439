"""Test harness: throwaway PostgreSQL clusters from the local server binaries, as root or not."""
