"""A quiet terminal and a full log: while a command works, what the libraries say goes to a log file (RUN/run.log).

The terminal shows rlaif's own progress display and messages. Everything else is appended to the log: the libraries'
log records (vllm, transformers, trl, datasets, torch, ray, accelerate, ...), Python warnings
(`logging.captureWarnings`), and whatever reaches file descriptors 1 and 2 — `print`s, C/C++ and Triton messages,
NUMA warnings, the engine's subprocesses — because both descriptors point to a pipe that a thread copies into the
log line by line. rlaif's own output goes to `TERMINAL` (or `echo`), which writes to the streams the command started
with. With `-v` (`set_verbose`) the log's lines are shown on the terminal too. Every line reaches the log through a
handler carrying `redact.FILTER`, so no API key is written there. Captures do not nest: a command inside a
capture (the run's training stages) logs to the outer file. A crash is logged with its traceback, and the exception
carries `log_file` so the CLI can say where to look.
"""

from __future__ import annotations

import ctypes
import fcntl
import io
import logging
import os
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

from .redact import FILTER

# each library's level in the log: INFO where it says what it is doing, WARNING where INFO is a flood (config dumps)
LIBRARIES = {"vllm": logging.INFO, "trl": logging.INFO, "ray": logging.INFO, "transformers": logging.WARNING,
             "datasets": logging.WARNING, "torch": logging.WARNING, "accelerate": logging.WARNING,
             "huggingface_hub": logging.WARNING, "peft": logging.WARNING, "triton": logging.WARNING,
             "httpx": logging.WARNING, "openai": logging.WARNING, "urllib3": logging.WARNING, "filelock": logging.WARNING}
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
F_SETPIPE_SZ = 1031  # Linux
OUTPUT_LOGGER = "output"  # lines copied from file descriptors 1 and 2
_verbose = False
_active: _Capture | None = None


def command_line() -> str:
    """The command line of this process, as the holder's message shows it."""
    parts = ["rlaif", *sys.argv[1:]] if Path(sys.argv[0]).name in ("rlaif", "__main__.py") else sys.argv
    text = " ".join(parts)
    return text if len(text) <= 200 else text[:197] + "..."


def set_verbose(on: bool) -> None:
    """`-v`: show the log's lines on the terminal as well."""
    global _verbose
    _verbose = on


class _Terminal(io.TextIOBase):
    """rlaif's own output: the stderr the command started with, even while descriptors 1 and 2 go to the log."""

    def _stream(self):
        return _active.err if _active is not None else sys.stderr

    def write(self, text: str) -> int:
        return self._stream().write(text)

    def flush(self) -> None:
        self._stream().flush()

    def isatty(self) -> bool:
        return self._stream().isatty()

    def fileno(self) -> int:
        return self._stream().fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:
        return getattr(self._stream(), "encoding", None) or "utf-8"


TERMINAL = _Terminal()


def echo(message: str = "", err: bool = False) -> None:
    """A line of rlaif's own (stdout, or stderr with `err`) that reaches the terminal during a capture too."""
    stream = (_active.err if err else _active.out) if _active is not None else (sys.stderr if err else sys.stdout)
    stream.write(f"{message}\n")
    stream.flush()


class _QuietHandler(logging.StreamHandler):
    """A handler whose own failures (a full disk) stay silent: reporting them on stderr would feed the pipe again."""

    def handleError(self, record) -> None:
        pass


def _handler(stream, level=logging.INFO) -> logging.Handler:
    handler = _QuietHandler(stream)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(FILTER)  # on the handler: it sees records of every logger, not only those the filter sits on
    handler.setLevel(level)
    return handler


def _terminal(stream, fd: int):
    """A stream on what `stream` wrote to before the redirection; a stream without a descriptor is used as it is."""
    try:
        if stream.fileno() != fd:
            return stream, False
    except (AttributeError, OSError, ValueError):  # CliRunner, pytest's capsys: redirecting descriptors misses them
        return stream, False
    return open(os.dup(fd), "w", encoding=getattr(stream, "encoding", None) or "utf-8", errors="backslashreplace",
                buffering=1), True


def _flush_c_stdio() -> None:
    """Push out what C code buffered in stdio, so it lands where it was written (the log, or the terminal)."""
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):
        pass


def _copy_lines(fd: int, logger: logging.Logger) -> None:
    """Read the pipe until every writer closed it; each line (the last part of a `\\r`-redrawn one) is a record."""
    pending = b""
    while chunk := os.read(fd, 65536):
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            if text := line.rstrip(b"\r").rsplit(b"\r", 1)[-1].decode("utf-8", "replace").rstrip():
                logger.info(text)
    if text := pending.rsplit(b"\r", 1)[-1].decode("utf-8", "replace").rstrip():
        logger.info(text)
    os.close(fd)


class _Capture:
    """The state one capture changes, restored on exit in reverse order."""

    def __init__(self, path: Path, verbose: bool):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "a", encoding="utf-8", errors="backslashreplace")  # appended: a rerun keeps earlier logs
        self.handlers = [_handler(self.file, logging.DEBUG)]
        sys.stdout.flush()
        sys.stderr.flush()
        _flush_c_stdio()
        (self.out, self.own_out), (self.err, self.own_err) = _terminal(sys.stdout, 1), _terminal(sys.stderr, 2)
        if verbose:
            self.handlers.append(_handler(self.err))
        else:  # rlaif's own warnings (an endpoint taken out of the pool, ...) are for the user
            own = _handler(self.err, logging.WARNING)
            own.setFormatter(logging.Formatter("%(message)s"))
            own.addFilter(lambda record: record.name == "rlaif")
            self.handlers.append(own)
        self.root = logging.getLogger()
        self.saved = {"root_level": self.root.level, "warnings": logging._warnings_showwarning is not None,
                      "env": os.environ.get("VLLM_CONFIGURE_LOGGING"), "streams": (sys.stdout, sys.stderr),
                      "libraries": {}}
        # vLLM would give its logger a stdout handler of its own; unconfigured, its records reach the root like others
        os.environ["VLLM_CONFIGURE_LOGGING"] = "0"
        for name, level in LIBRARIES.items():
            lib = logging.getLogger(name)
            self.saved["libraries"][name] = (lib.level, lib.propagate, list(lib.handlers))
            for h in list(lib.handlers):
                if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                    lib.removeHandler(h)  # transformers' and datasets' stderr handlers, vLLM's stdout one
            lib.setLevel(level)
            lib.propagate = True
        for h in self.handlers:
            self.root.addHandler(h)
        self.root.setLevel(min(self.root.level or logging.WARNING, logging.INFO))
        self.output = logging.getLogger(OUTPUT_LOGGER)
        self.output.propagate = False  # a root handler on the old stderr would write the line back into the pipe
        self.output.handlers = list(self.handlers)
        logging.captureWarnings(True)
        self._redirect()

    def _redirect(self) -> None:
        read, write = os.pipe()
        try:  # room for bursts: C code writing while it holds the GIL cannot wait for the reader thread
            fcntl.fcntl(write, F_SETPIPE_SZ, 1 << 20)
        except OSError:
            pass
        self.fds = os.dup(1), os.dup(2)
        os.dup2(write, 1)
        os.dup2(write, 2)
        os.close(write)
        sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", buffering=1, closefd=False)
        sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", buffering=1, closefd=False)
        self.reader = threading.Thread(target=_copy_lines, args=(read, self.output), name="rlaif-log", daemon=True)
        self.reader.start()

    def close(self) -> None:
        """Descriptors, streams, loggers and warnings as they were; the log file closed."""
        sys.stdout.flush()
        sys.stderr.flush()
        _flush_c_stdio()
        sys.stdout, sys.stderr = self.saved["streams"]
        for fd, saved in zip((1, 2), self.fds):
            os.dup2(saved, fd)  # the pipe's last writers in this process are gone: the reader sees its end
            os.close(saved)
        self.reader.join(timeout=5)  # an engine subprocess still holding the pipe must not hang the command
        if not self.saved["warnings"]:
            logging.captureWarnings(False)
        for h in self.handlers:
            self.root.removeHandler(h)
        self.root.setLevel(self.saved["root_level"])
        self.output.handlers = []
        for name, (level, propagate, handlers) in self.saved["libraries"].items():
            lib = logging.getLogger(name)
            lib.setLevel(level)
            lib.propagate = propagate
            lib.handlers = handlers
        if self.saved["env"] is None:
            os.environ.pop("VLLM_CONFIGURE_LOGGING", None)
        else:
            os.environ["VLLM_CONFIGURE_LOGGING"] = self.saved["env"]
        for stream, own in ((self.out, self.own_out), (self.err, self.own_err)):
            if own:
                stream.close()
        self.file.close()


@contextmanager
def capture(path: str | Path):
    """Send library output to `path` (appended) for the block; rlaif's own stays on the terminal (see module doc)."""
    global _active
    if _active is not None:  # a training stage inside a run: the run's log already has it
        yield _active.path
        return
    from .errors import UserError

    state = _Capture(Path(path), _verbose)
    _active = state
    log = logging.getLogger("rlaif.runlog")  # not "rlaif": its warnings are shown on the terminal, and the CLI says these
    log.info("%s (pid %d)", command_line(), os.getpid())
    try:
        yield state.path
    except UserError as e:
        log.error("%s", e)
        raise
    except KeyboardInterrupt:
        log.error("interrupted")
        raise
    except Exception as e:
        log.error("failed", exc_info=True)
        try:
            e.log_file = state.path
        except AttributeError:  # an exception type without attributes: the CLI shows its traceback then
            pass
        raise
    finally:
        _active = None
        state.close()


def verbose_option(command):
    """The commands' `-v/--verbose` flag (it sets `set_verbose` before the command runs)."""
    import click

    return click.option("-v", "--verbose", is_flag=True, expose_value=False, is_eager=True,
                        callback=lambda ctx, param, value: set_verbose(value),
                        help="Also show the libraries' output (vLLM, transformers, TRL, warnings) on the terminal; "
                             "it always goes to the log file.")(command)
