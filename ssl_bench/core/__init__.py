"""Core layer: errors, atomic I/O, registry, typed config and the plugin interfaces. Imports nothing above it."""
