"""Every GraphQL document carehook sends to Healthie, in one place (API version 2026-01-01).

Each document says which of Healthie's schema types it relies on, so a schema change is checked
here once. Field names are Healthie's own (snake_case). What the schema does not show, and
carehook therefore assumes, is marked **assumed**; the sandbox's fake
(:mod:`carehook.sandbox.healthie`) serves exactly these shapes.

Facts used (VENDORS.md, from Healthie's schema and its AI-scribe guide):

- There is no ``appointmentTranscript`` query: transcripts are the ``transcripts`` field of
  ``Appointment``, returned only when one appointment is queried; without a ``status`` filter only
  completed ones come back. ``TranscriptStatusEnum``: processing | completed | failed |
  incomplete; ``TranscriptTypeEnum``: realtime_capture | processed_recording. ``expiring_url`` is
  a short-lived link to the WebVTT file: a credential, never logged.
- The AI scribe's note is ``Appointment.generated_form_answer_group`` (a ``FormAnswerGroup``
  whose ``kind`` is ambient | video_call).
- Input type names follow Healthie's lower-camel convention (``createWebhookInput``; the seed's
  guide writes ``CreateWebhookInput``): **assumed**, and checked by nothing but Healthie itself.
- Webhooks: ``createWebhook(input: createWebhookInput)``, ``deleteWebhook``,
  ``expireWebhookSignature`` payloads are ``{ webhook { ... } messages { field message } }``;
  ``webhooks`` is a connection with ``nodes``; there is no ``webhook(id)`` query.
"""

from __future__ import annotations

#: Appointment (id, date, pm_status, user: User, provider: User) and its
#: transcripts(status: [TranscriptStatusEnum], transcript_type: TranscriptTypeEnum): [Transcript]
#: (id, status, transcript_type, transcript_start, transcript_end, expiring_url), plus the
#: scribe's note generated_form_answer_group: FormAnswerGroup (id, kind, created_at,
#: generated_form_answers: [FormAnswer] (id, answer, displayed_answer,
#: custom_module: CustomModule (id, label, mod_type))). ``User.full_name`` is read only to tell
#: the clinician's voice from the client's in the VTT file; it is never stored or logged.
APPOINTMENT = """\
query CarehookAppointment($id: ID, $statuses: [TranscriptStatusEnum]) {
  appointment(id: $id) {
    id
    date
    pm_status
    user { id full_name }
    provider { id full_name }
    transcripts(status: $statuses) {
      id
      status
      transcript_type
      transcript_start
      transcript_end
      expiring_url
    }
    generated_form_answer_group {
      id
      kind
      created_at
      generated_form_answers {
        id
        answer
        displayed_answer
        custom_module { id label mod_type }
      }
    }
  }
}
"""

#: the selection of a Webhook object (id, url, is_enabled, should_retry,
#: webhook_events: [WebhookEvent] (event_type)); ``signature_secret`` only where it is returned
_WEBHOOK = "id url is_enabled should_retry webhook_events { event_type }"
_MESSAGES = "messages { field message }"

#: Mutation createWebhook(input: CreateWebhookInput!) -> CreateWebhookPayload
#: (webhook: Webhook { id signature_secret ... }, messages: [FieldError])
CREATE_WEBHOOK = f"""\
mutation CarehookCreateWebhook($input: createWebhookInput!) {{
  createWebhook(input: $input) {{
    webhook {{ {_WEBHOOK} signature_secret }}
    {_MESSAGES}
  }}
}}
"""

#: Query webhooks(first: Int, after: String): WebhookConnection (nodes: [Webhook],
#: page_info: PageInfo (has_next_page, end_cursor)); the page_info field names are **assumed**
#: (Healthie's snake_case convention for Relay's pageInfo)
LIST_WEBHOOKS = f"""\
query CarehookWebhooks($first: Int, $after: String) {{
  webhooks(first: $first, after: $after) {{
    nodes {{ {_WEBHOOK} }}
    page_info {{ has_next_page end_cursor }}
  }}
}}
"""

#: Mutation deleteWebhook(input: deleteWebhookInput!) -> (webhook: Webhook { id }, messages)
DELETE_WEBHOOK = f"""\
mutation CarehookDeleteWebhook($input: deleteWebhookInput!) {{
  deleteWebhook(input: $input) {{
    webhook {{ id }}
    {_MESSAGES}
  }}
}}
"""

#: Mutation expireWebhookSignature(input: {id}) -> (webhook: Webhook, messages); that the
#: payload's webhook carries the new ``signature_secret`` is **assumed** (as createWebhook's does)
EXPIRE_WEBHOOK_SIGNATURE = f"""\
mutation CarehookExpireWebhookSignature($input: expireWebhookSignatureInput!) {{
  expireWebhookSignature(input: $input) {{
    webhook {{ id signature_secret }}
    {_MESSAGES}
  }}
}}
"""

#: the statuses the transcript step asks for (a processing one means "not yet": retried)
TRANSCRIPT_STATUSES = ("completed", "processing")

__all__ = [
    "APPOINTMENT",
    "CREATE_WEBHOOK",
    "DELETE_WEBHOOK",
    "EXPIRE_WEBHOOK_SIGNATURE",
    "LIST_WEBHOOKS",
    "TRANSCRIPT_STATUSES",
]
