"""The report's tables as data (`Table`) and their three renderings: Markdown, LaTeX (booktabs) and HTML."""
from __future__ import annotations

import html
from dataclasses import dataclass, field


class Link(str):
    """A table cell that links to `url` (an MLflow run): a link in HTML and Markdown, its text in LaTeX."""

    def __new__(cls, text: str, url: str):
        obj = super().__new__(cls, text)
        obj.url = url
        return obj


def _md_cell(c: str) -> str:
    text = c.replace("|", "\\|")
    return f"[{text}]({c.url})" if isinstance(c, Link) else text


def _html_cell(c: str) -> str:
    return f"<a href='{html.escape(c.url, quote=True)}'>{html.escape(c)}</a>" if isinstance(c, Link) else html.escape(c)


@dataclass
class Table:
    key: str  # short id (LaTeX label, HTML anchor)
    title: str
    columns: list[str]
    rows: list[list[str]]
    groups: list[tuple[str, str, int]] = field(default_factory=list)  # (short, long, span) over columns, in order
    note: str = ""  # below the table: how to read it
    above: list[str] = field(default_factory=list)  # said once above the table: what is missing for every row, and why

    def md_columns(self) -> list[str]:
        """Markdown has one header row: grouped columns get the group's short name as a prefix."""
        if not self.groups:
            return list(self.columns)
        out, i = [], 0
        for short, _, span in self.groups:
            out += [f"{short} {c}".strip() for c in self.columns[i:i + span]]
            i += span
        return out


# --- Markdown ------------------------------------------------------------------------------------------------------
def markdown(head, body) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def table_markdown(t: Table) -> str:
    above = "\n>\n".join(f"> {a}" for a in t.above) + "\n\n" if t.above else ""
    out = f"## {t.title}\n\n{above}" + markdown(t.md_columns(), t.rows)
    return out + (f"\n{t.note}\n" if t.note else "")


# --- LaTeX ---------------------------------------------------------------------------------------------------------
_TEX = [("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"), ("_", r"\_"),
        ("{", r"\{"), ("}", r"\}"), ("~", r"\textasciitilde{}"), ("^", r"\textasciicircum{}"),
        ("±", r"$\pm$"), ("Δ", r"$\Delta$"), ("↓", r"$\downarrow$"), ("↑", r"$\uparrow$"), ("—", "---"),
        ("×", r"$\times$"), ("§", r"\S{}"), ("−", "--"), ("`", "")]


def tex_escape(s: str) -> str:
    out = []
    for ch in s:
        for a, b in _TEX:
            if ch == a:
                out.append(b)
                break
        else:
            out.append(ch)
    return "".join(out)


def latex(head, body, groups: list[tuple[str, str, int]] | None = None, caption: str = "", label: str = "") -> str:
    """A booktabs tabular (needs \\usepackage{booktabs}); `groups` adds a spanning header row with rules."""
    lines = []
    if caption:
        lines += [r"\begin{table}[ht]", r"\centering", r"\caption{" + tex_escape(caption) + "}"]
        if label:
            lines.append(r"\label{tab:" + label + "}")
    lines += [r"\begin{tabular}{" + "l" * len(head) + "}", r"\toprule"]
    if groups:
        spans, rules, col = [], [], 1
        for _, long, span in groups:
            spans.append(r"\multicolumn{" + str(span) + "}{c}{" + tex_escape(long) + "}" if long else " & ".join([""] * span))
            if long:
                rules.append(r"\cmidrule(lr){" + f"{col}-{col + span - 1}" + "}")
            col += span
        lines += [" & ".join(spans) + r" \\", " ".join(rules)]
    lines += [" & ".join(tex_escape(h) for h in head) + r" \\", r"\midrule"]
    lines += [" & ".join(tex_escape(c) for c in row) + r" \\" for row in body]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def table_latex(t: Table) -> str:
    above = "".join(f"% {a}\n" for a in t.above)
    return f"% {t.title}\n{above}" + latex(t.columns, t.rows, t.groups or None, caption=t.title, label=t.key)


# --- HTML ----------------------------------------------------------------------------------------------------------
def html_table(head, body, groups: list[tuple[str, str, int]] | None = None, table_id: str = "") -> str:
    """A table in a horizontally scrolling box (the page itself never scrolls sideways). Columns whose group is named
    get a left rule at the group's start, so 'ours' and 'paper' read as separate blocks."""
    starts = set()
    top = ""
    if groups:
        col, cells = 0, []
        for _, long, span in groups:
            if long:
                starts.add(col)
            cls = " class='g'" if long else ""
            cells.append(f"<th colspan='{span}'{cls}>{html.escape(long)}</th>")
            col += span
        top = "<tr class='groups'>" + "".join(cells) + "</tr>"

    def td(tag: str, i: int, c: str) -> str:
        return f"<{tag}{' class=g' if i in starts else ''}>{_html_cell(c)}</{tag}>"

    th = "".join(td("th", i, h) for i, h in enumerate(head))
    trs = "".join("<tr>" + "".join(td("td", i, c) for i, c in enumerate(row)) + "</tr>" for row in body)
    ident = f" id='{html.escape(table_id)}'" if table_id else ""
    return f"<div class='tw'><table{ident}><thead>{top}<tr>{th}</tr></thead><tbody>{trs}</tbody></table></div>"


def table_html(t: Table) -> str:
    above = "".join(f"<p class='above'>{html.escape(a)}</p>" for a in t.above)
    note = f"<p class='note'>{html.escape(t.note)}</p>" if t.note else ""
    return (f"<h2 id='h-{html.escape(t.key)}'>{html.escape(t.title)}</h2>" + above
            + html_table(t.columns, t.rows, t.groups or None, t.key) + note)
