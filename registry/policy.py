"""Which sources a job may fall back to, and which checkpoints it may use.

The rule behind it: a production job either makes events with exactly the checkpoint it
was configured for and says which, or stops with an error.

* **Failover** (``failover=True``, ``--failover``, ``PXDBG_FAILOVER=1``): a configured
  source that *fails* (unreachable, damaged bytes, I/O error, cache lock timeout) is
  skipped for the next one. Without it, such a failure is an error. A source that merely
  does not know the tag or payload is always skipped.
* **Demo weights** (``allow_demo=True``, ``--allow-demo``, ``PXDBG_ALLOW_DEMO=1``): the
  embedded demo store is asked (last) even though sources are configured. With nothing
  configured it is the only source, and answers without opt-in.
* **Production only** (``require_production=True``, ``--require-production``,
  ``PXDBG_REQUIRE_PRODUCTION=1`` for grid jobs): a demo or untrained checkpoint is refused
  (DemoCheckpointError). Without it, using one always logs a loud warning.

A checkpoint is *demo* when it came from the embedded store, or its manifest says
``demo: true``, or it is untrained (``training_steps: 0``).
"""

from __future__ import annotations

import logging
import os

from .exceptions import DemoCheckpointError
from .manifest import Manifest

log = logging.getLogger("registry")

ALLOW_DEMO_ENV = "PXDBG_ALLOW_DEMO"
REQUIRE_PRODUCTION_ENV = "PXDBG_REQUIRE_PRODUCTION"
FAILOVER_ENV = "PXDBG_FAILOVER"

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


def env_flag(name: str) -> bool:
    """A yes/no environment variable; anything else is a ValueError (a typo in a grid
    job's environment must not silently mean "no")."""
    value = os.environ.get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"environment variable {name}={os.environ[name]!r}: use 1 or 0")


def flag(value: bool | None, env: str) -> bool:
    """``value`` if given, else the environment variable ``env``."""
    return env_flag(env) if value is None else bool(value)


def demo_reason(manifest: Manifest | None, *, from_embedded: bool = False) -> str | None:
    """Why a checkpoint is not production weights, or None when it is."""
    if from_embedded:
        return "it comes from the embedded demo store"
    if manifest is None:
        return None
    if manifest.untrained:
        return "its manifest says it is untrained (training_steps 0)"
    if manifest.demo:
        return "its manifest marks it as a demo checkpoint"
    return None


def check_checkpoint(manifest: Manifest | None, what: str, *, from_embedded: bool = False,
                     require_production: bool | None = None, warn: bool = True) -> bool:
    """Apply the production rule to one checkpoint; returns True when it is demo.

    Refuses a demo checkpoint under ``require_production`` (default: the environment),
    and otherwise warns loudly that the events are not physics (unless ``warn`` is False:
    the caller knows the warning was given already)."""
    reason = demo_reason(manifest, from_embedded=from_embedded)
    if reason is None:
        return False
    if flag(require_production, REQUIRE_PRODUCTION_ENV):
        raise DemoCheckpointError(
            f"refusing checkpoint {what}: {reason}, and production weights are required "
            f"(--require-production / {REQUIRE_PRODUCTION_ENV}=1). Configure the production conditions "
            "source and campaign (PXDBG_CONDITIONS, --campaign)"
        )
    if warn:
        log.warning("DEMO CHECKPOINT %s: %s. Its events are NOT a physics background model; set "
                    "%s=1 to refuse such checkpoints in production jobs", what, reason, REQUIRE_PRODUCTION_ENV)
    return True
