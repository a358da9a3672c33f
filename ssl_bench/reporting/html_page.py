"""One self-contained HTML page of sortable tables (inline CSS and script, no network): open it from disk, click a
column header to sort that table by it (again: the other way); ``page.html#sort=N`` opens it sorted by column N
(from 0)."""

from __future__ import annotations

import html
from collections.abc import Sequence

import pandas as pd

_STYLE = """
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: 0.4em 0; }
th, td { padding: 0.25em 0.7em; border-bottom: 1px solid #ddd; text-align: left; white-space: nowrap; }
th { background: #f3f3f3; cursor: pointer; user-select: none; }
th[aria-sort="ascending"]::after { content: " \\25B2"; } th[aria-sort="descending"]::after { content: " \\25BC"; }
tr.upper-bound td { font-style: italic; color: #555; background: #fafafa; }
tr.few td.n { color: #b35900; font-weight: bold; }
p.note { max-width: 60em; color: #444; }
"""

_SCRIPT = r"""
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var asc = th.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      var body = table.tBodies[0], rows = Array.from(body.rows);
      function key(row) {
        var c = row.cells[col];
        return c.dataset.sort !== undefined ? c.dataset.sort : c.textContent;
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b), nx = parseFloat(x), ny = parseFloat(y);
        if (x === "" || y === "") { return x === y ? 0 : x === "" ? 1 : -1; }  // empty cells last, both ways
        var d = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
        return asc ? d : -d;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
var wanted = /^#sort=(\d+)$/.exec(location.hash);  // page.html#sort=5: open sorted by the sixth column
if (wanted) {
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var th = table.querySelectorAll("th")[+wanted[1]];
    if (th) { th.click(); }
  });
}
"""


def sortable_page(
    title: str,
    tables: Sequence[tuple[str, pd.DataFrame]],
    note: str = "",
    sort_keys: Sequence[Sequence[Sequence[str | None]]] | None = None,
    row_classes: Sequence[Sequence[str]] | None = None,
) -> str:
    """A complete HTML document: ``title``, then per ``(heading, frame)`` a heading and a sortable table of the
    frame's cells (shown as text), then ``note``. ``sort_keys[t][r][c]`` (optional) is what cell (r, c) of table
    t sorts by instead of its text (a number, "" to sort last, None for its text); ``row_classes[t][r]`` a CSS
    class of the row."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        '<head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_STYLE}</style>",
        "</head>",
        "<body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for t, (heading, frame) in enumerate(tables):
        out.append(f"<h2>{html.escape(heading)}</h2>")
        out.append('<table class="sortable">')
        out.append("<thead><tr>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns) + "</tr></thead>")
        out.append("<tbody>")
        for r, row in enumerate(frame.itertuples(index=False)):
            cls = row_classes[t][r] if row_classes else ""
            cells = []
            for c, (name, value) in enumerate(zip(frame.columns, row)):
                key = sort_keys[t][r][c] if sort_keys else None
                attrs = f' class="{html.escape(str(name))}"' if str(name).isidentifier() else ""
                if key is not None and key != str(value):
                    attrs += f' data-sort="{html.escape(key)}"'
                cells.append(f"<td{attrs}>{html.escape(str(value))}</td>")
            out.append((f'<tr class="{cls}">' if cls else "<tr>") + "".join(cells) + "</tr>")
        out.append("</tbody></table>")
    if note:
        out.append(f'<p class="note">{html.escape(note)}</p>')
    out += [f"<script>{_SCRIPT}</script>", "</body>", "</html>", ""]
    return "\n".join(out)
