"""The fake Healthie's fictional content: visits, names, transcripts (WebVTT) and scribe notes.

Deterministic per appointment id (its SHA-256 picks a conversation, the people and the timing).
Everything is invented; no real person is meant.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

_CONVERSATIONS: tuple[tuple[tuple[str, str], ...], ...] = (
    (
        ("DOCTOR", "Hi, thanks for joining. How have things been since we increased the "
                   "sertraline to 100 milligrams?"),
        ("PATIENT", "Better, I think. The constant worrying is down, maybe a four out of ten "
                    "instead of a seven."),
        ("DOCTOR", "That's real progress. Any side effects, like nausea, trouble sleeping or "
                   "changes in appetite?"),
        ("PATIENT", "Some nausea the first week, that's gone. I still wake up around three most "
                    "nights."),
        ("DOCTOR", "How many nights a week, roughly?"),
        ("PATIENT", "Four or five. I end up on my phone until it's time to get up."),
        ("DOCTOR", "Let's keep the phone out of the bedroom, and if you're awake more than "
                   "twenty minutes, get up and do something quiet in dim light."),
        ("PATIENT", "Okay, I can try that."),
        ("DOCTOR", "Any thoughts of harming yourself since we last spoke?"),
        ("PATIENT", "No, nothing like that."),
        ("DOCTOR", "Good. We'll stay at 100 milligrams and start the sleep program we talked "
                   "about. Let's check in again in {weeks} weeks."),
        ("PATIENT", "Sounds good, thank you."),
    ),
    (
        ("DOCTOR", "Good morning. I have your lab results. Your TSH came back at 6.8, which is "
                   "higher than we want."),
        ("PATIENT", "That would explain it. I've been exhausted and cold all the time."),
        ("DOCTOR", "Are you taking the levothyroxine on an empty stomach, away from coffee?"),
        ("PATIENT", "Mostly. Sometimes I take it with breakfast when I'm rushing."),
        ("DOCTOR", "Taking it with food can lower how much you absorb. Try to take it with water "
                   "thirty minutes before eating."),
        ("PATIENT", "Okay. Do I need a higher dose?"),
        ("DOCTOR", "Yes, we'll go from 75 to 88 micrograms daily and recheck your TSH in six "
                   "weeks."),
        ("PATIENT", "Should I watch for anything with the new dose?"),
        ("DOCTOR", "Call us if you notice a racing heartbeat, shakiness or trouble sleeping."),
        ("PATIENT", "Will do. Thanks, doctor."),
    ),
    (
        ("DOCTOR", "How has your breathing been over the last {weeks} weeks?"),
        ("PATIENT", "Not great. I've needed the albuterol three or four times a week, and it "
                    "wakes me up at night sometimes."),
        ("DOCTOR", "How many nights a month would you say?"),
        ("PATIENT", "Maybe three or four. Mostly when it gets cold."),
        ("DOCTOR", "Any fever, chest pain, or coughing up colored mucus?"),
        ("PATIENT", "No, just the tight chest and wheezing."),
        ("DOCTOR", "That tells me your asthma isn't well controlled. I'd like to start a daily "
                   "inhaled steroid, budesonide-formoterol, two puffs twice a day."),
        ("PATIENT", "Every day, even when I feel fine?"),
        ("DOCTOR", "Yes, it prevents the flares. Rinse your mouth after each use. Keep the "
                   "albuterol for sudden symptoms."),
        ("PATIENT", "Got it."),
        ("DOCTOR", "If you need the rescue inhaler more than every four hours or your lips turn "
                   "blue, go to the emergency room."),
        ("PATIENT", "Understood. Thank you."),
    ),
    (
        ("DOCTOR", "Welcome back. Last time your A1c was 6.1, in the prediabetes range. How "
                   "have the changes been going?"),
        ("PATIENT", "I cut out soda and I'm walking after dinner most days."),
        ("DOCTOR", "That's great. About how long are the walks?"),
        ("PATIENT", "Twenty minutes, maybe five days a week."),
        ("DOCTOR", "Perfect. Let's look at breakfast. What does a usual morning look like?"),
        ("PATIENT", "Usually a bagel with cream cheese and orange juice."),
        ("DOCTOR", "Try swapping the juice for whole fruit and adding some protein, like eggs "
                   "or Greek yogurt. It keeps blood sugar steadier."),
        ("PATIENT", "I can do the yogurt."),
        ("DOCTOR", "We'll recheck your A1c in three months. Keep logging your meals in the app "
                   "and I'll review them before our next visit in {weeks} weeks."),
        ("PATIENT", "Great, see you then."),
    ),
)
_EST = timezone(timedelta(hours=-5))
_EPOCH = datetime(2026, 3, 2, 8, 0, tzinfo=_EST)

_PROVIDERS = ("Dr. Maya Okafor", "Dr. Samuel Reyes", "Dr. Priya Natarajan", "Dr. Tomas Lindqvist")
_CLIENTS = ("Jordan Avery", "Casey Morgan", "Riley Chen", "Alex Dubois")


def digest(appointment_id: str) -> bytes:
    """The seed of an appointment's content."""
    return hashlib.sha256(f"healthie:appointment:{appointment_id}".encode()).digest()


def num(d: bytes, at: int, low: int, high: int) -> int:
    """A number in ``[low, high]`` from two bytes of the seed."""
    return low + int.from_bytes(d[at : at + 2], "big") % (high - low + 1)


def starts(d: bytes) -> datetime:
    """When the appointment began: a half-hour slot in March or April 2026, US Eastern."""
    return _EPOCH + timedelta(days=d[0] % 60, minutes=30 * (d[1] % 18))


def healthie_time(moment: datetime) -> str:
    """Healthie's ``"YYYY-MM-DD HH:MM:SS -0500"``."""
    return moment.strftime("%Y-%m-%d %H:%M:%S %z")


def people(d: bytes) -> tuple[str, str]:
    """The provider's and the client's (fictional) names."""
    return _PROVIDERS[d[13] % len(_PROVIDERS)], _CLIENTS[d[14] % len(_CLIENTS)]


def turns(appointment_id: str) -> list[tuple[str, str, int, int]]:
    """The conversation as ``(role, text, start_ms, end_ms)``, in spoken order."""
    d = digest(appointment_id)
    weeks = num(d, 7, 2, 8)
    out, at = [], num(d, 9, 800, 4000)
    for i, (speaker, text) in enumerate(_CONVERSATIONS[d[6] % len(_CONVERSATIONS)]):
        spoken = text.format(weeks=weeks)
        end = at + 250 * len(spoken.split()) + 400
        out.append((speaker, spoken, at, end))
        at = end + 200 + 60 * (d[(11 + i) % 32] % 16)
    return out


def _stamp(ms: int) -> str:
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}.{rest % 1000:03d}"


def vtt(appointment_id: str, kind: str) -> str:
    """The transcript as a WebVTT file: Zoom's ``N`` / ``Name: text`` cues for a processed
    recording, ``<v Name>`` voice spans for a real-time capture."""
    provider, client = people(digest(appointment_id))
    cues = ["WEBVTT", ""]
    for n, (role, text, start, end) in enumerate(turns(appointment_id), 1):
        name = provider if role == "DOCTOR" else client
        spoken = f"{name}: {text}" if kind == "processed_recording" else f"<v {name}>{text}"
        cues += [str(n), f"{_stamp(start)} --> {_stamp(end)}", spoken, ""]
    return "\n".join(cues)


def scribe_note(appointment_id: str) -> dict[str, Any]:
    """The AI scribe's note, as ``generated_form_answer_group``."""
    d = digest(appointment_id)
    said = turns(appointment_id)
    patient = [t for role, t, _, _ in said if role == "PATIENT"]
    doctor = [t for role, t, _, _ in said if role == "DOCTOR"]
    modules = (("Subjective", " ".join(patient[:2])), ("Assessment", doctor[len(doctor) // 2]),
               ("Plan", doctor[-1]))  # fmt: skip
    answers = [{"id": str(num(d, 20, 500000, 599999) * 10 + i), "answer": text,
                "displayed_answer": text,
                "custom_module": {"id": str(8100 + i), "label": label, "mod_type": "textarea"}}
               for i, (label, text) in enumerate(modules)]  # fmt: skip
    created = starts(d) + timedelta(minutes=32)
    return {"id": str(num(d, 18, 300000, 399999)), "kind": "video_call",
            "created_at": healthie_time(created), "generated_form_answers": answers}


def transcript_times(appointment_id: str) -> tuple[datetime, datetime]:
    """When the transcript began and ended."""
    d = digest(appointment_id)
    begin = starts(d)
    return begin, begin + timedelta(milliseconds=turns(appointment_id)[-1][3])


def as_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
