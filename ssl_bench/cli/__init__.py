"""The ``ssl-bench`` command: :mod:`.main` (parser, run/resume/eval/check/list), :mod:`.data`, :mod:`.table`."""
