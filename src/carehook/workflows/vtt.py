"""A WebVTT transcript (Healthie's ``expiring_url`` file) as ordered transcript items (pure).

Parsed with webvtt-py. Each cue becomes one :class:`TranscriptItem` with its start and end in
milliseconds, in time order (cues of equal start keep their file order). The speaker comes from
the cue's voice span (``<v Dr. Maya Okafor>...``) or, as Zoom writes its transcripts, a
``Name: `` prefix on the cue text; the prefix is removed from the text. A speaker matching the
appointment's provider is ``DOCTOR``, its client ``PATIENT`` (names compared without case,
punctuation or an honorific); generic labels (Doctor, Provider, Patient, Client ...) map the same
way; anyone else is ``UNSPECIFIED``.

A file webvtt-py refuses raises :class:`~carehook.errors.PermanentError` whose message names the
transcript only: the file's content (clinical text) is never quoted.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import webvtt
from webvtt.errors import MalformedCaptionError, MalformedFileError

from carehook.errors import PermanentError
from carehook.workflows.ports import TranscriptItem

_LABELS = {
    "doctor": "DOCTOR", "provider": "DOCTOR", "clinician": "DOCTOR", "host": "DOCTOR",
    "patient": "PATIENT", "client": "PATIENT",
}  # fmt: skip
_HONORIFICS = ("dr", "doctor", "mr", "mrs", "ms", "mx", "prof")
#: ``Name: text`` as Zoom writes it; a name is letters (no digits), spaces and ``.'-``, at most
#: five words
_PREFIX = re.compile(r"^\s*([^\W\d_](?:[^\W\d_]|[.' -]){0,59}?)\s*:\s+(.*)$", re.DOTALL)
_MAX_NAME_WORDS = 5


def normalise_name(name: str) -> str:
    """``"Dr. Maya Okafor"`` -> ``"maya okafor"``: lower case, no punctuation or honorific."""
    words = re.sub(r"[^\w\s]", " ", name.lower()).split()
    while words and words[0] in _HONORIFICS and len(words) > 1:
        words = words[1:]
    return " ".join(words)


def speaker_roles(provider_name: str | None, patient_name: str | None) -> dict[str, str]:
    """Normalised name -> role, for :func:`parse_vtt`."""
    roles = {}
    if patient_name and normalise_name(patient_name):
        roles[normalise_name(patient_name)] = "PATIENT"
    if provider_name and normalise_name(provider_name):
        roles[normalise_name(provider_name)] = "DOCTOR"
    return roles


def _role(label: str | None, roles: Mapping[str, str]) -> str:
    if not label:
        return "UNSPECIFIED"
    name = normalise_name(label)
    return roles.get(name) or _LABELS.get(name) or _LABELS.get(label.strip().lower(), "UNSPECIFIED")


def _speaker_and_text(voice: str | None, text: str) -> tuple[str | None, str]:
    flat = " ".join(line.strip() for line in text.splitlines() if line.strip())
    if voice:
        return voice, flat
    match = _PREFIX.match(flat)
    if match and len(match.group(1).split()) <= _MAX_NAME_WORDS:
        return match.group(1), match.group(2).strip()
    return None, flat


def parse_vtt(text: str, roles: Mapping[str, str], what: str) -> tuple[TranscriptItem, ...]:
    """The cues of ``text`` (a WebVTT file) as items in spoken order (``what``: for errors)."""
    try:
        captions = webvtt.from_string(text).captions
    except (MalformedFileError, MalformedCaptionError, ValueError, IndexError):
        raise PermanentError(f"{what}: not a valid WebVTT file") from None
    items = []
    for caption in captions:
        label, spoken = _speaker_and_text(caption.voice, caption.text)
        if not spoken:
            continue
        items.append(TranscriptItem(_role(label, roles), spoken,
                                    start_ms=caption.start_time.in_milliseconds(),
                                    end_ms=caption.end_time.in_milliseconds()))  # fmt: skip
    items.sort(key=lambda item: item.start_ms or 0)
    return tuple(items)
