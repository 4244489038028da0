"""Shared fixtures for the Python tests."""
