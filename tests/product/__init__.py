"""Tests of the product a user meets: install, CLI, docs, metadata."""
