"""The extractor of tests/docs/examples.py: fences, continuation lines, comments, ids."""

from __future__ import annotations

from docs.examples import fences, python_blocks, shell_lines, split_comment

PAGE = '''# A page

```bash
hnas plan data -o plan.json   # patch 40x56x40
hnas show "unet a \\
           b # not a comment" --plan plan.json
hnas search --dataset d \\
    --budget 2
make demo   # not hnas
```

```
hnas inside a plain fence (grammar text, strings)
```

```python
x = 1
```
'''


def test_shell_lines_join_continuations_and_split_comments(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(PAGE)
    lines = shell_lines(page)
    assert [(line.line, line.text, line.comment) for line in lines] == [
        (4, "hnas plan data -o plan.json", "patch 40x56x40"),
        (5, 'hnas show "unet a b # not a comment" --plan plan.json', ""),
        (7, "hnas search --dataset d --budget 2", ""),
        (9, "make demo", "not hnas"),
    ]
    assert [line.is_hnas for line in lines] == [True, True, True, False]
    assert [line.id for line in lines] == ["page.md:4", "page.md:5", "page.md:7", "page.md:9"]


def test_fences_and_python_blocks(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(PAGE)
    assert [(language, start) for language, start, _ in fences(page)] == [("bash", 3), ("", 12), ("python", 16)]
    assert split_comment("a 'b # c' # d") == ("a 'b # c'", "d")
    assert split_comment("x#y") == ("x#y", "")
    assert [block.code for block in python_blocks(page)] == ["x = 1\n"]
