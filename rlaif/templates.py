"""Every prompt the engine sends is a Jinja2 template under prompts/, rendered in a sandbox."""

from __future__ import annotations

import hashlib
from pathlib import Path

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from .errors import UserError

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "prompts"


def _template_line(exc: BaseException, filename: str) -> int | None:
    """Jinja rewrites tracebacks so template frames carry the template's file and line."""
    line, tb = None, exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


class Templates:
    """Templates from a user directory (if given) over the shipped prompts/ directory."""

    def __init__(self, user_dir: str | Path | None = None, autoescape: bool = False):
        dirs = ([str(user_dir)] if user_dir else []) + [str(DEFAULT_DIR)]
        if user_dir and not Path(user_dir).is_dir():
            raise UserError("templates directory not found", str(user_dir))
        self.env = SandboxedEnvironment(
            loader=jinja2.FileSystemLoader(dirs),
            undefined=jinja2.StrictUndefined,  # a missing variable is an error, never ""
            trim_blocks=True,
            lstrip_blocks=True,
            autoescape=autoescape,  # on for HTML (the run report), off for prompts
            auto_reload=False,  # no stat() of every imported template on every render: files do not change mid-run
        )
        self._cache: dict[str, jinja2.Template] = {}

    def get(self, name: str) -> jinja2.Template:
        """Load and compile a template; syntax errors become UserError with file and line."""
        if name not in self._cache:
            try:
                self._cache[name] = self.env.get_template(name)
            except jinja2.TemplateNotFound:
                raise UserError(f"template {name!r} not found in {', '.join(self.env.loader.searchpath)}") from None
            except jinja2.TemplateSyntaxError as e:
                raise UserError(f"template syntax error: {e.message}", e.filename or name, e.lineno) from None
        return self._cache[name]

    def render(self, name: str, **context) -> str:
        """Render a template; an undefined variable or a sandbox violation is a UserError."""
        template = self.get(name)
        try:
            return template.render(**context)
        except jinja2.UndefinedError as e:
            raise UserError(f"template error: {e.message}", template.filename, _template_line(e, template.filename)) from None
        except jinja2.exceptions.SecurityError as e:
            raise UserError(f"template tried something unsafe: {e}", template.filename, _template_line(e, template.filename)) from None
        except Exception as e:  # a template bug, not ours: report it where it happened
            raise UserError(f"template error: {type(e).__name__}: {e}", template.filename, _template_line(e, template.filename)) from None

    def sha256(self, *names: str) -> str:
        """Hash of the sources of the named templates, for record keys and provenance."""
        h = hashlib.sha256()
        for name in names:
            h.update(name.encode() + b"\0" + Path(self.get(name).filename).read_bytes() + b"\0")
        return h.hexdigest()

    def path(self, name: str) -> str:
        """The file a template name resolves to."""
        return self.get(name).filename
