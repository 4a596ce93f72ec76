"""A real headless Chromium in its own process group, driven by Playwright over CDP.

Debian's ``chromium`` (``/usr/bin/chromium``, or ``$WSFINALLY_CHROMIUM``) is started by us,
not by Playwright, so a test can SIGKILL the browser's whole process group the way a crash
or a killed laptop lid would; Playwright attaches with ``connect_over_cdp``. Browser
downloads do not work here, so nothing is fetched. Missing browser or Playwright: skipped
locally, a failure in CI.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from support import IN_CI, seconds

CHROMIUM = os.environ.get("WSFINALLY_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
HAVE_CHROMIUM = os.path.exists(CHROMIUM)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-port=0",
]


def _missing(what: str) -> None:
    message = f"{what} (apt-get install chromium; pip install playwright)"
    if IN_CI:
        pytest.fail(f"CI needs a real browser: {message}")
    pytest.skip(message)


class Chromium:
    """One browser process group and Playwright's handle on it."""

    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        browser: Any,
        profile: str,
        drain: asyncio.Future[bytes],
    ) -> None:
        self.proc = proc
        self.browser = browser
        self.profile = profile
        self._drain = drain  # reads its stderr so the pipe never fills and stalls it

    def kill(self) -> None:
        """SIGKILL every process of this browser at once: no close frame, no goodbye."""
        if self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    async def stop(self) -> None:
        try:
            if self.proc.returncode is None:
                await asyncio.wait_for(self.browser.close(), seconds(5))
        except Exception:  # the browser may already be dead: it is killed below anyway
            pass
        self.kill()
        await asyncio.wait_for(self._drain, seconds(10))  # EOF: every process is gone
        await asyncio.wait_for(self.proc.wait(), seconds(10))
        shutil.rmtree(self.profile, ignore_errors=True)


@asynccontextmanager
async def chromium_launcher() -> AsyncIterator[Any]:
    """``launch()`` starts a new browser; every one is stopped on the way out."""
    if not HAVE_CHROMIUM:
        _missing(f"no Chromium at {CHROMIUM}")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        _missing("playwright is not installed")
    started: list[Chromium] = []
    async with async_playwright() as pw:

        async def launch() -> Chromium:
            profile = tempfile.mkdtemp(prefix="wsfinally-chromium-")
            proc = await asyncio.create_subprocess_exec(
                CHROMIUM,
                *FLAGS,
                f"--user-data-dir={profile}",
                "about:blank",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
            assert proc.stderr is not None
            deadline = asyncio.get_running_loop().time() + seconds(30)
            url = None
            seen: list[str] = []
            while url is None:
                remaining = deadline - asyncio.get_running_loop().time()
                line = await asyncio.wait_for(proc.stderr.readline(), max(remaining, 0.01))
                if not line:
                    raise RuntimeError(f"chromium exited before listening: {seen[-10:]}")
                text = line.decode(errors="replace").strip()
                seen.append(text)
                match = re.search(r"DevTools listening on (ws://\S+)", text)
                if match:
                    url = match.group(1)
            drain = asyncio.ensure_future(proc.stderr.read())
            handle = Chromium(proc, None, profile, drain)
            started.append(handle)
            handle.browser = await pw.chromium.connect_over_cdp(url)
            return handle

        try:
            yield launch
        finally:
            for handle in started:
                await handle.stop()
