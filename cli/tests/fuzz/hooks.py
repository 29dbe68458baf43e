"""Schemathesis hooks for cli/tests/openapi_fuzz.rs (loaded through SCHEMATHESIS_HOOKS).

One rule of the API spans two parts of a request, which OpenAPI cannot express: on
`POST /messages`, a body `messageId` and an `Idempotency-Key` header must be equal when
both are given (else 422, which the document lists). Schemathesis draws the header and
the body independently, so a case it calls schema-valid can break that rule and would be
reported as a valid request the API rejected. Just before such a positive case is sent,
this hook makes the body's `messageId` equal to the header. Negative cases are left
alone: a mismatch there is one more reason for the 4xx they expect.
"""

import schemathesis


@schemathesis.hook
def before_call(context, case, kwargs):
    if case.operation.path != "/messages" or case.method.upper() != "POST":
        return
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return
    key = (case.headers or {}).get("Idempotency-Key")
    body = case.body
    if isinstance(key, str) and isinstance(body, dict) and body.get("messageId") is not None:
        body["messageId"] = key
