"""Reporting layer: run records, tables, leaderboard and figures."""
