"""``ssl-bench list``: registered names and summaries, answered without importing torch where it can.

The built-ins' names and one-line summaries are kept as data in ``builtin_names.json`` beside this module;
``tests/test_cli_fast.py`` checks the file against the real registry. When only built-ins can be registered (no
``--plugin`` file, no ``$SSL_BENCH_PLUGINS``, no installed entry points) the list comes from that file; otherwise
the registry is discovered as usual. After adding or renaming a built-in (or editing the first line of its
docstring), regenerate the file with ``python -m ssl_bench.cli.listing``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ssl_bench.core.registry import ENTRY_POINT_GROUPS, name_matches

BUILTIN_NAMES_FILE = Path(__file__).with_name("builtin_names.json")


def builtin_names() -> dict[str, dict[str, str]]:
    """``{kind: {name: summary}}`` of the built-ins, from :data:`BUILTIN_NAMES_FILE`."""
    return json.loads(BUILTIN_NAMES_FILE.read_text(encoding="utf-8"))


def registry_names() -> dict[str, dict[str, str]]:
    """The same table as the real registry builds it (imports every built-in module, so torch)."""
    from ssl_bench.core.registry import REGISTRIES

    return {
        kind: {e.name: e.summary for e in reg.entries() if e.source.startswith("module ssl_bench.")}
        for kind, reg in REGISTRIES.items()
    }


def only_builtins(plugins: list[str]) -> bool:
    """True when nothing but the built-ins can be registered in this process."""
    if plugins or os.environ.get("SSL_BENCH_PLUGINS"):
        return False
    from importlib.metadata import entry_points

    return not any(entry_points(group=group) for group in ENTRY_POINT_GROUPS.values())


def list_entries(kind: str, pattern: str | None, plugins: list[str]) -> list[tuple[str, str]]:
    """``(name, summary)`` of every registered ``kind`` whose name matches ``pattern`` (see
    :func:`ssl_bench.core.registry.name_matches`), sorted by name."""
    if only_builtins(plugins):
        table = builtin_names()[kind]
    else:
        from ssl_bench.core.registry import REGISTRIES

        table = {e.name: e.summary for e in REGISTRIES[kind].entries()}
    return [(name, table[name]) for name in sorted(table) if name_matches(name, pattern)]


if __name__ == "__main__":
    text = json.dumps(registry_names(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    BUILTIN_NAMES_FILE.write_text(text, encoding="utf-8")
    print(f"wrote {BUILTIN_NAMES_FILE}")
