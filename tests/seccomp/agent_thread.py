"""`agent.serve()` on an event loop in a thread of this process, as the supervisor runs it.

Shared by the seccomp tests and the seccomp benchmark: both drive the agent in-process so that
they can read its state and swap in handlers of their own.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from retinue.seccomp import agent


class AgentThread:
    def __init__(
        self, listener: str, routes: agent.Routes, log: logging.Logger, served: agent.Agent
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self.task: asyncio.Task[None] | None = None
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)

            async def main() -> None:
                sock = agent.bind(listener)
                ready.set()
                await agent.serve(sock, routes, log, agent=served)

            self.task = self.loop.create_task(main())
            try:
                self.loop.run_until_complete(self.task)
            except asyncio.CancelledError:
                pass

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"the agent did not start listening on {listener}")

    def stop(self) -> None:
        if self.thread.is_alive():
            assert self.task is not None
            self.loop.call_soon_threadsafe(self.task.cancel)
            self.thread.join(15)
