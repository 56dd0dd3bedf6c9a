"""A notify body as it arrives over HTTP, decoded once: its API family, its encoding, its fields.

IOTPay posts a V3 notify as JSON and a v1 notify as form fields (all strings), or in the v1
request style as the single form field `params=<json>`. `decode_body` turns the bytes into a
`NotifyBody`; the ingress decodes each body once (and masks a full card number in it), and the
worker decodes the stored body again with the family the ingress found. Decoding is strict: a
repeated key, NaN, a number too long, a lone surrogate or deep nesting is refused, since the
signed text would be ambiguous or could not be stored. Fields are not validated here
(worker/iotpay/notify.py does that).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qsl, urlencode

from worker.errors import ValidationError
from worker.iotpay.cards import mask_pan
from worker.iotpay.channels import Family

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
CARD_FIELD = "cardNum"

# A notify is flat; a little nesting is tolerated (signed as JSON text), thousands of brackets are not.
MAX_JSON_DEPTH = 32
# digits of a JSON integer: far beyond any amount, far below Python's int-parsing limit
MAX_INT_DIGITS = 40


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose keys are unique: a repeated key makes the signed text ambiguous."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValidationError("body", f"key {key[:40]!r} appears twice")
        out[key] = value
    return out


def _int_text(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValidationError("body", f"a number has more than {MAX_INT_DIGITS} digits")
    return int(text)


def _float_text(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValidationError("body", "a number is out of range")
    return value


def _constant(name: str) -> float:
    raise ValidationError("body", f"{name} is not JSON")


def _check_text(value: str) -> None:
    # A NUL character is left alone here: it signs and stores as bytes; PostgreSQL refuses it in
    # a text, so the worker records that notify as failed, naming it (it was the gateway's word).
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("body", "a field is not valid Unicode (a lone surrogate)") from None


def _check_values(data: Any) -> None:
    """Depth at most MAX_JSON_DEPTH, every text storable and signable. Iterative: no recursion to exhaust."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            _check_text(value)
        elif isinstance(value, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise ValidationError("body", f"nested deeper than {MAX_JSON_DEPTH} levels")
            if isinstance(value, dict):
                for key in value:
                    _check_text(key)
                stack.extend((v, depth + 1) for v in value.values())
            else:
                stack.extend((v, depth + 1) for v in value)


def load_json(text: str, field: str = "body") -> Any:
    """Strict JSON: no repeated key, no NaN or Infinity, no number out of range, no lone surrogate
    in a text (it cannot be signed or stored), at most MAX_JSON_DEPTH deep. Raises
    ValidationError(field, ...)."""
    try:
        data = json.loads(text, object_pairs_hook=_pairs, parse_int=_int_text, parse_float=_float_text,
                          parse_constant=_constant)
    except json.JSONDecodeError as exc:
        raise ValidationError(field, f"invalid JSON ({exc.msg} at char {exc.pos})") from None
    except RecursionError:  # the C parser recurses per bracket; thousands of them end here
        raise ValidationError(field, f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValidationError as exc:
        raise ValidationError(field, exc.problem) from None
    try:
        _check_values(data)
    except ValidationError as exc:
        raise ValidationError(field, exc.problem) from None
    return data


@dataclass(frozen=True)
class NotifyBody:
    """One decoded notify body."""

    family: Family
    content_type: str  # JSON or FORM: how the body was decoded (the request's header may say less)
    params: dict[str, Any]  # every field, as decoded (the inner object of `params=<json>`)
    raw: bytes = field(repr=False)  # as it arrived, or as stored (card number masked)

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> NotifyBody:
        """Fields already decoded from JSON (a line of `iotledger ingest`); the family is told by the values."""
        return cls(detect_family(params), JSON, params, b"")

    @property
    def ack(self) -> bytes:
        """The answer IOTPay expects: `SUCCESS` for a JSON body, `success` for form fields."""
        return b"SUCCESS" if self.content_type == JSON else b"success"

    def with_card_masked(self) -> NotifyBody:
        """This body with a full card number masked (itself when there is none).

        The number is replaced where it stands, so the rest of the body stays byte for byte as it
        came; when it cannot be found verbatim (escaped in the body, or its digits stand elsewhere
        too), the fields are encoded again.
        """
        card = self.params.get(CARD_FIELD)
        if isinstance(card, int) and not isinstance(card, bool):  # a JSON number is a card number too
            card = str(card)
        elif card is not None and not isinstance(card, str):
            # a float, an object, a list: IOTPay sends a string, but whatever came is kept for the
            # worker to judge, and its digits are masked all the same (the field becomes a string)
            card = json.dumps(card, ensure_ascii=False)
        if card is None or mask_pan(card) == card:
            return self
        masked = dict(self.params, **{CARD_FIELD: mask_pan(card)})
        text = self.raw.decode("utf-8")
        if text.count(card) == 1:
            candidate = text.replace(card, masked[CARD_FIELD]).encode("utf-8")
            try:
                if decode_body(candidate, self.content_type).params == masked:
                    return replace(self, params=masked, raw=candidate)
            except ValidationError:
                pass
        if self.content_type == JSON:
            return replace(self, params=masked,
                           raw=json.dumps(masked, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
        return replace(self, params=masked, raw=urlencode(masked).encode("utf-8"))


def detect_family(params: dict[str, Any]) -> Family:
    """v1 notifies carry only strings (form fields); V3 carries JSON numbers."""
    values = [v for k, v in params.items() if k != "sign"]
    return "v1" if all(isinstance(v, str) for v in values) else "v3"


def decode_body(raw: bytes, content_type: str | None, *, family: Family | None = None) -> NotifyBody:
    """Decode an HTTP notify body: JSON (V3) or form fields (v1, optionally `params=<json>`).

    `family` is the one the ingress found when it first decoded this body (the inbox keeps it):
    when given, it is taken instead of being told from the body again.
    Raises ValidationError("body", ...) when it is neither, and for JSON load_json refuses.
    """
    ctype = (content_type or "").split(";")[0].strip().lower()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationError("body", "not UTF-8 text") from None
    stripped = text.lstrip()
    if ctype == JSON or (not ctype and stripped.startswith("{")):
        data = load_json(text)
        if not isinstance(data, dict):
            raise ValidationError("body", "JSON body must be an object")
        # IOTPay notifies V3 as JSON and v1 as form fields, whatever the values' types
        return NotifyBody(family or "v3", JSON, data, raw)
    if ctype in (FORM, "") and "=" in text:
        try:
            pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True, encoding="utf-8", errors="strict")
        except (ValueError, UnicodeDecodeError):
            raise ValidationError("body", "malformed form body") from None
        form = dict(pairs)
        if len(form) != len(pairs):
            raise ValidationError("body", "a form field appears twice")
        _check_values(form)
        if set(form) == {"params"}:  # v1 request style: params=<json>
            inner = load_json(form["params"], "params")
            if not isinstance(inner, dict):
                raise ValidationError("params", "must be a JSON object")
            return NotifyBody(family or detect_family(inner), FORM, inner, raw)
        return NotifyBody(family or "v1", FORM, form, raw)
    raise ValidationError("body", f"neither JSON nor form fields (Content-Type {content_type or 'missing'!r})")
