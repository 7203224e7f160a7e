"""Every prompt the engine sends is a Jinja2 template under rlaif/prompts/, rendered in a sandbox.

A templates directory may come from a stranger, and its prompts may go to a remote server and into the datasets.
So: templates render in Jinja's ImmutableSandboxedEnvironment (no attribute tricks, no mutating lists or dicts);
a template file that resolves outside the template directories (a symlink to ~/.ssh/id_rsa) is refused before it
is read; `*` and `**` cannot build huge strings or numbers; and a render that runs past RENDER_SECONDS (nested
loops) is stopped, as a one-line error naming the template and line.
"""

from __future__ import annotations

import hashlib
import math
import os
import signal
import threading
from pathlib import Path

import jinja2
from jinja2.loaders import split_template_path
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ..errors import UserError

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "prompts"  # shipped in the wheel as package data (pyproject.toml)
RENDER_SECONDS = 5.0  # one render; the shipped templates take well under a millisecond
MAX_PRODUCT = 1_000_000  # longest string or list `*` may build (characters or items)
MAX_POWER_BITS = 10_000  # largest number `**` may build


class RenderTimeout(Exception):
    """A render ran past RENDER_SECONDS (raised from a SIGALRM handler, inside the template's frames)."""


class _RootedLoader(jinja2.FileSystemLoader):
    """A FileSystemLoader that refuses a template file whose real path is outside its directories."""

    def get_source(self, environment, template):
        roots = [Path(d).resolve() for d in self.searchpath]
        for directory in self.searchpath:  # the file FileSystemLoader would pick, checked before anything reads it
            candidate = os.path.join(directory, *split_template_path(template))
            if os.path.isfile(candidate):
                real = Path(candidate).resolve()
                if not any(real.is_relative_to(root) for root in roots):
                    raise UserError(f"template {template!r} resolves to {real}, outside the template directories "
                                    f"({', '.join(map(str, roots))}); a template must be a file inside them", candidate)
                break
        return super().get_source(environment, template)


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, with `*` and `**` bounded (they run in C, where no timer can stop them)."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context, operator, left, right):
        """Refuse a product or power too large to build; otherwise Jinja's own operator."""
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > MAX_PRODUCT:
                    raise jinja2.exceptions.SecurityError(f"`*` would build {len(seq) * n:,} items (limit {MAX_PRODUCT:,})")
        if operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right > 0:
            if right * math.log2(abs(left)) > MAX_POWER_BITS:
                raise jinja2.exceptions.SecurityError(f"`**` would build a number of more than {MAX_POWER_BITS:,} bits")
        return super().call_binop(context, operator, left, right)


class _Deadline:
    """SIGALRM bounds a render in the main thread. The handler is installed once (where SIGALRM had none) and only
    raises while a render is armed, so an alarm that arrives after a render finished does nothing. Per render it
    costs a getitimer and two setitimer calls (~6 us). Off the main thread, where another handler owns SIGALRM, or
    while another timer runs (pytest-timeout's), renders are not timed."""

    armed = False
    installed: bool | None = None  # None: not yet tried

    def _expired(self, signum, frame):
        if self.armed:
            self.armed = False
            raise RenderTimeout(f"rendering took longer than {RENDER_SECONDS:g} s")

    def arm(self, seconds: float) -> bool:
        """Start the clock for one render; False when this render cannot be timed."""
        if threading.current_thread() is not threading.main_thread():
            return False
        if self.installed is None:
            self.installed = hasattr(signal, "setitimer") and signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, None)
            if self.installed:
                signal.signal(signal.SIGALRM, self._expired)
        if not self.installed or signal.getitimer(signal.ITIMER_REAL)[0]:
            return False
        self.armed = True
        signal.setitimer(signal.ITIMER_REAL, seconds)
        return True

    def disarm(self) -> None:
        """Stop the clock."""
        self.armed = False  # first: an alarm that still arrives finds nothing to stop
        signal.setitimer(signal.ITIMER_REAL, 0)


_deadline = _Deadline()


def _template_line(exc: BaseException, filename: str) -> int | None:
    """Jinja rewrites tracebacks so template frames carry the template's file and line."""
    line, tb = None, exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


class Templates:
    """Templates from a user directory (if given) over the shipped rlaif/prompts/ directory."""

    def __init__(self, user_dir: str | Path | None = None, autoescape: bool = False):
        dirs = ([str(user_dir)] if user_dir else []) + [str(DEFAULT_DIR)]
        if user_dir and not Path(user_dir).is_dir():
            raise UserError("templates directory not found", str(user_dir))
        self.env = _Sandbox(
            loader=_RootedLoader(dirs),
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
        timed = _deadline.arm(RENDER_SECONDS)
        try:
            return template.render(**context)
        except UserError:  # an {% include %} the loader refused
            raise
        except RenderTimeout as e:
            raise UserError(f"template error: {e} (a loop too large?)", template.filename,
                            _template_line(e, template.filename)) from None
        except jinja2.UndefinedError as e:
            raise UserError(f"template error: {e.message}", template.filename, _template_line(e, template.filename)) from None
        except jinja2.exceptions.SecurityError as e:
            raise UserError(f"template tried something unsafe: {e}", template.filename, _template_line(e, template.filename)) from None
        except Exception as e:  # a template bug, not ours: report it where it happened
            raise UserError(f"template error: {type(e).__name__}: {e}", template.filename, _template_line(e, template.filename)) from None
        finally:
            if timed:
                _deadline.disarm()

    def sha256(self, *names: str) -> str:
        """Hash of the sources of the named templates, for record keys and provenance."""
        h = hashlib.sha256()
        for name in names:
            h.update(name.encode() + b"\0" + Path(self.get(name).filename).read_bytes() + b"\0")
        return h.hexdigest()
