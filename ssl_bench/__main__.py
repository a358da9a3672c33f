"""``python -m ssl_bench ARGS`` is ``ssl-bench ARGS``."""

from ssl_bench.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
