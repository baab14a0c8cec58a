"""Content: offer content with sandboxed templates (LLM generation with guardrails to come).

    template = compile_content(offer_content, escape_html=False)  # once, when saved
    template.render({"profile": ..., "context": ...}, problems)   # per decision; never raises

See ``docs/content-templates.md``.
"""

from __future__ import annotations

from relevo.content.sandbox import MAX_LOOP_ITERATIONS, MAX_OUTPUT_CHARS
from relevo.content.templates import (
    MAX_SOURCE_CHARS,
    ContentTemplate,
    RenderProblem,
    TemplateInvalid,
    compile_content,
    is_template,
)

__all__ = [
    "MAX_LOOP_ITERATIONS",
    "MAX_OUTPUT_CHARS",
    "MAX_SOURCE_CHARS",
    "ContentTemplate",
    "RenderProblem",
    "TemplateInvalid",
    "compile_content",
    "is_template",
]
