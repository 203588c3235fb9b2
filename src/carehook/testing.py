"""Public fakes for tests of code that uses carehook's ports.

Each fake honours the same contract as the real adapters: the contract suites in
``tests/contract`` run against both.
"""

from __future__ import annotations

# --- inbox -----------------------------------------------------------------------------------
# The in-memory inbox (intake and work halves) lives beside the adapters it mirrors.
from carehook.inbox._memory_work import StoredEvent
from carehook.inbox.memory import InMemoryInbox

__all__ = ["InMemoryInbox", "StoredEvent"]


# --- (other fakes: fake clock, signed-request builder ... are added below by their owners) ---
