"""Progress bars: live on a terminal, one line every few seconds in logs (DVC / Snakemake / CI)."""
import sys

from tqdm import tqdm


def bar(iterable=None, **kw) -> tqdm:
    kw.setdefault("mininterval", 0.2 if sys.stderr.isatty() else 15.0)
    kw.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kw)
