"""Rendering in a process of its own, stopped after its time budget: a template that never ends costs one reply.

The sandbox bounds what a template can build and `range` watches the clock (replies.render), but Python cannot
interrupt a loop that produces nothing, so the render itself runs in a helper process with a memory limit; when
it has not answered within its budget it is killed (and started again for the next reply). One process serves
the whole service, one render at a time; it keeps its compiled templates between renders.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import threading
from collections.abc import Mapping
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

from replies.render import RENDER_SECONDS, RenderedReply, TemplateError

log = logging.getLogger(__name__)

MEMORY_BYTES = 512 * 1024 * 1024
"""The address space the render process may use; a template that wants more fails with MemoryError."""
START_SECONDS = 60.0
"""How long a new render process may take to start (a fresh interpreter importing Jinja2, on a busy machine):
not counted against the template's own budget, so a slow start never passes for a template that loops."""
READY = "ready"


def _serve(connection: Connection) -> None:
    """The helper process: render what it is asked, answer (ok, result or error text), until the pipe closes."""
    import resource

    from replies.templates import reply_templates

    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))
    connection.send(READY)  # started and imported: from here on the clock is the template's
    while True:
        try:
            directory, name, context = connection.recv()
        except EOFError:
            return
        try:
            connection.send((True, reply_templates(Path(directory)).render(name, context)))
        except TemplateError as exc:
            connection.send((False, str(exc)))
        except MemoryError:
            connection.send((False, f"template {name!r} needed more than {MEMORY_BYTES // 2**20} MB to render; "
                                    "a reply template may not grow like that"))


class RenderWorker:
    """The helper process, started on first use; `render` waits at most `seconds`."""

    def __init__(self, seconds: float = RENDER_SECONDS) -> None:
        self.seconds = seconds
        self._lock = threading.Lock()
        self._process: BaseProcess | None = None
        self._connection: Connection | None = None

    def render(self, directory: Path, name: str, context: Mapping[str, object]) -> RenderedReply:
        with self._lock:
            connection = self._ready()
            try:
                connection.send((str(directory), name, dict(context)))
                answered = connection.poll(self.seconds)
            except (OSError, EOFError):
                answered = False
            if not answered:
                self._stop()
                raise TemplateError(
                    f"template {name!r} took longer than {self.seconds:g} s to render and was stopped; a reply "
                    "template may not loop like that"
                )
            try:
                ok, result = connection.recv()
            except (OSError, EOFError):
                self._stop()
                raise TemplateError(f"rendering template {name!r} failed (the render process ended); fix the "
                                    "template or report it") from None
        if not ok:
            raise TemplateError(str(result))
        assert isinstance(result, RenderedReply)
        return result

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _ready(self) -> Connection:
        if self._process is not None and self._process.is_alive() and self._connection is not None:
            return self._connection
        self._stop()
        ours, theirs = multiprocessing.Pipe()
        # spawn, not fork: the service has threads (relay, web), and a forked copy of their locks can hang
        process = multiprocessing.get_context("spawn").Process(target=_serve, args=(theirs,), daemon=True,
                                                               name="kcc-render")
        process.start()
        theirs.close()
        self._process, self._connection = process, ours
        try:
            started = ours.poll(START_SECONDS) and ours.recv() == READY
        except (OSError, EOFError):
            started = False
        if not started:
            self._stop()
            raise TemplateError(f"the reply render process did not start within {START_SECONDS:g} s; the machine "
                                "may be out of memory or processes. Try again; if it persists, check the service log")
        return ours

    def _stop(self) -> None:
        process, connection = self._process, self._connection
        self._process = self._connection = None
        if connection is not None:
            connection.close()
        if process is not None and process.is_alive():
            process.kill()
            process.join(5)


_WORKER = RenderWorker()


def render_guarded(directory: Path, name: str, context: Mapping[str, object]) -> RenderedReply:
    """Render template `name` of `directory` in the helper process, within RENDER_SECONDS."""
    return _WORKER.render(directory, name, context)
