"""The kinds of service (`type` in a service's TOML), as a small strategy a unit consults.

systemd has one vtable per unit type; a retinue service differs by kind in three answers only:
when it counts as ready (a daemon: its readiness check passes; a one-shot: it exited cleanly,
which is when its dependents may start), which restart policy applies when none is configured,
and how a missed start deadline is worded.
"""

from __future__ import annotations


class Kind:
    """One kind of service; the instances below are the only ones."""

    __slots__ = (
        "checks_readiness",
        "deadline_word",
        "default_restart",
        "done_on_clean_exit",
        "name",
    )

    def __init__(self, name: str, checks_readiness: bool, done_on_clean_exit: bool,
                 default_restart: str, deadline_word: str) -> None:
        self.name = name
        # Whether a run is checked for readiness (and then for health) while it runs.
        self.checks_readiness = checks_readiness
        # Whether a clean exit is the unit's success (state "done"), before any restart policy.
        self.done_on_clean_exit = done_on_clean_exit
        # restart.policy when the service does not set one (systemd's defaults for each).
        self.default_restart = default_restart
        # "<service> not ready after 30s": what a missed start deadline means for this kind.
        self.deadline_word = deadline_word


# A daemon: ready when its readiness check passes; restarted when it fails.
SIMPLE = Kind("simple", checks_readiness=True, done_on_clean_exit=False,
              default_restart="on-failure", deadline_word="not ready")
# Runs to completion: done (and its dependents start) when it exits cleanly; a one-shot still
# running at its deadline has not hung "before ready", it did not finish.
ONESHOT = Kind("oneshot", checks_readiness=False, done_on_clean_exit=True,
               default_restart="no", deadline_word="not done")

KINDS = {kind.name: kind for kind in (SIMPLE, ONESHOT)}
