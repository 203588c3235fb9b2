"""The ingest path's hashing and nonces keep the GIL (a hand-off to the writer thread under load
cost more than the work), and still give the same digests and fresh, unshared nonces."""

from __future__ import annotations

import hashlib
import hmac
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carehook import crypto
from carehook.crypto import KeyRing, payload_aad, random_nonce
from carehook.signatures._common import HOLD_GIL_UP_TO, hmac_sha256, sha256

KEY = b"whsec-test-key"
#: message sizes around hashlib's 2,048-byte GIL threshold, our pieces and our upper bound
SIZES = [0, 1, 2046, 2047, 2048, 2049, 4094, 4095, 4096, 10_000, HOLD_GIL_UP_TO,
         HOLD_GIL_UP_TO + 1, 3 * HOLD_GIL_UP_TO]  # fmt: skip


@pytest.mark.parametrize("size", SIZES)
def test_hmac_and_sha256_match_the_standard_library(size: int) -> None:
    """Fed in pieces or whole, the digests are the standard library's one-shot ones."""
    message = os.urandom(size)
    assert hmac_sha256(KEY, message) == hmac.digest(KEY, message, "sha256")
    assert sha256(message) == hashlib.sha256(message).digest()


@given(key=st.binary(max_size=100), message=st.binary(max_size=9000))
def test_hmac_matches_for_any_key_and_message(key: bytes, message: bytes) -> None:
    """Any key and message: the same HMAC as ``hmac.digest``."""
    assert hmac_sha256(key, message) == hmac.digest(key, message, "sha256")


@pytest.fixture
def other_thread_runs() -> Iterator[Callable[[Callable[[], object], int], int]]:
    """How often another thread got the GIL while a function ran ``n`` times.

    A spinner thread waits for the GIL and gives it back at once; the switch interval is so
    long that it only runs when the caller lets go of the GIL by itself.
    """
    count = 0
    stop = False

    def spin() -> None:
        nonlocal count
        while not stop:
            count += 1
            time.sleep(0)

    interval = sys.getswitchinterval()
    spinner = threading.Thread(target=spin, daemon=True)
    sys.setswitchinterval(100.0)
    spinner.start()

    def runs(fn: Callable[[], object], n: int) -> int:
        before = count
        for _ in range(n):
            fn()
        return count - before

    try:
        time.sleep(0.05)  # the spinner is now waiting for the GIL
        yield runs
    finally:
        stop = True
        sys.setswitchinterval(interval)
        spinner.join(5)


def test_the_probe_sees_a_call_that_lets_go_of_the_gil(
    other_thread_runs: Callable[[Callable[[], object], int], int],
) -> None:
    """The probe works: a one-shot ``hmac.digest`` of a large body lets the other thread run."""
    big = os.urandom(256 * 1024)
    seen = 0
    for _ in range(50):  # a release is seen only when the spinner is scheduled in time
        seen += other_thread_runs(lambda: hmac.digest(KEY, big, "sha256"), 20)
        if seen:
            break
    assert seen > 0


@pytest.mark.parametrize("size", [1500, 3000, 20_000, HOLD_GIL_UP_TO])
def test_webhook_sized_bodies_are_hashed_holding_the_gil(
    other_thread_runs: Callable[[Callable[[], object], int], int], size: int
) -> None:
    """Signature checks on the event loop never hand the GIL to another thread."""
    body = os.urandom(size)
    assert other_thread_runs(lambda: hmac_sha256(KEY, body), 500) == 0
    assert other_thread_runs(lambda: sha256(body), 500) == 0


def test_nonces_are_taken_holding_the_gil_between_refills(
    other_thread_runs: Callable[[Callable[[], object], int], int],
) -> None:
    """Only a refill from the OS (once per block) may let go of the GIL, never a single take."""
    random_nonce()  # a block is there
    left = (len(crypto._nonces.block) - crypto._nonces.at) // 12
    assert left > 100
    assert other_thread_runs(random_nonce, left) == 0


def test_nonces_are_12_random_bytes_never_repeated() -> None:
    """Across several blocks every nonce is new and 96 bits long."""
    nonces = [random_nonce() for _ in range(3 * crypto._NONCE_BLOCK + 5)]
    assert {len(n) for n in nonces} == {12}
    assert len(set(nonces)) == len(nonces)


def test_threads_never_share_nonces() -> None:
    """Each thread draws from its own block: no nonce is handed to two threads."""
    taken: list[list[bytes]] = [[] for _ in range(4)]

    def take(i: int) -> None:
        taken[i].extend(random_nonce() for _ in range(2000))

    threads = [threading.Thread(target=take, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [n for nonces in taken for n in nonces]
    assert len(set(every)) == len(every) == 8000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_repeat_the_parents_nonces() -> None:
    """After fork the child starts a new block; the parent's next nonces stay the parent's."""
    random_nonce()  # the parent holds a block with nonces left in it
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send its next nonces and leave at once
        try:
            os.write(write, b"".join(random_nonce() for _ in range(50)))
        finally:
            os._exit(0)
    os.close(write)
    child = b""
    while chunk := os.read(read, 4096):
        child += chunk
    os.close(read)
    os.waitpid(pid, 0)
    parent = [random_nonce() for _ in range(50)]
    child_nonces = {child[i : i + 12] for i in range(0, len(child), 12)}
    assert len(child_nonces) == 50
    assert not child_nonces & set(parent)


def test_each_ciphertext_has_its_own_nonce() -> None:
    """Encrypting the same payload twice gives two nonces, and both decrypt."""
    ring = KeyRing(keys={"k1": bytes(range(32))}, active="k1")
    aad = payload_aad("abridge", "evt_1")
    first, second = ring.encrypt(b"{}", aad), ring.encrypt(b"{}", aad)
    start = 4 + first[3]
    assert first[start : start + 12] != second[start : start + 12]
    assert ring.decrypt(first, aad) == ring.decrypt(second, aad) == b"{}"
