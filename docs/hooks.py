"""mkdocs hook: show the docstrings' doctest examples as code blocks.

Docstrings carry runnable ``>>>`` examples (pytest runs them); Markdown would
render them as paragraphs, so a preprocessor fences each example first.
"""

from markdown import Extension
from markdown.preprocessors import Preprocessor


class DoctestFences(Preprocessor):
    def run(self, lines):
        out, inside = [], False
        for line in lines:
            starts = line.lstrip().startswith(">>>")
            if starts and not inside:
                out += ["", "```pycon"]
                inside = True
            elif inside and not line.strip():
                out += ["```", ""]
                inside = False
            out.append(line.strip() if inside else line)
        if inside:
            out.append("```")
        return out


class DoctestFenceExtension(Extension):
    def extendMarkdown(self, md):  # noqa: N802 (Markdown's API)
        md.preprocessors.register(DoctestFences(md), "doctest_fences", 40)


def on_config(config):
    config.markdown_extensions.append(DoctestFenceExtension())
    return config
