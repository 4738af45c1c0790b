"""Convert a percent-format script (# %% / # %% [markdown]) into a notebook with the course kernel.

Exercise cells: `# %% [solution: GRADE_ID]` and `# %% [tests: GRADE_ID points=N]` get nbgrader metadata."""
import re, sys, nbformat
from nbformat.v4 import new_notebook, new_code_cell, new_markdown_cell

def nbgrader(kind, grade_id, points=None):
    meta = {"schema_version": 3, "grade_id": grade_id, "locked": kind == "tests", "task": False,
            "solution": kind == "solution", "grade": kind == "tests"}
    if kind == "tests":
        meta["points"] = points
    return {"nbgrader": meta}

def convert(src, dst):
    text = open(src).read()
    cells, kind, buf, meta = [], None, [], {}
    def flush():
        if kind is None: return
        body = "\n".join(buf).strip("\n")
        if kind == "md":
            body = "\n".join(l[2:] if l.startswith("# ") else (l[1:] if l.startswith("#") else l) for l in body.splitlines())
            cells.append(new_markdown_cell(body))
        else:
            cells.append(new_code_cell(body, metadata=meta))
    for line in text.splitlines():
        if line.startswith("# %%"):
            flush(); buf = []; meta = {}
            m = re.match(r"# %% \[(solution|tests): (\S+?)(?: points=(\d+))?\]", line)
            if m:
                kind = "code"; meta = nbgrader(m.group(1), m.group(2), int(m.group(3) or 1))
            else:
                kind = "md" if "[markdown]" in line else "code"
        else:
            buf.append(line)
    flush()
    nb = new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "diamond-lite", "display_name": "Python (diamond-lite)", "language": "python"},
        "language_info": {"name": "python"}})
    nbformat.write(nb, dst)

if __name__ == "__main__":
    convert(sys.argv[1], sys.argv[2])
