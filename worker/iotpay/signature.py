"""IOTPay's MD5 `sign`, exactly as ../shared/iotpay/README.md describes it.

1. every parameter but `sign` whose value is neither "" nor null;
2. sorted by name (byte order);
3. joined as k1=v1&k2=v2 with values as plain text (no URL-encoding, no trimming);
4. `&key=<merchant key>` appended;
5. MD5 of the UTF-8 bytes, upper-case hex.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from worker.errors import SignatureError, ValidationError

SIGN_FIELD = "sign"


PHP_PRECISION = 14  # PHP's `precision` setting, used when a float is cast to a string


def php_float(value: float) -> str:
    """A float as PHP's string cast prints it: 14 significant digits, `1.0E+25` past them.

    0.1 + 0.2 -> "0.3", 100.0 -> "100", 1e25 -> "1.0E+25", 1e-5 -> "1.0E-5", -0.0 -> "-0".
    """
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    mantissa, exponent = f"{value:.{PHP_PRECISION - 1}e}".split("e")  # rounded like zend_dtoa mode 2
    sign = "-" if mantissa.startswith("-") else ""
    digits = mantissa.lstrip("-").replace(".", "").rstrip("0")
    point = int(exponent) + 1  # digits are 0.d1d2... x 10**point
    if point < -3 or point > PHP_PRECISION:
        shown = int(exponent)
        return f"{sign}{digits[0]}.{digits[1:] or '0'}E{'-' if shown < 0 else '+'}{abs(shown)}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if len(digits) <= point:
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


def _php_array(value: Any) -> Any:
    """A decoded JSON value as PHP holds it after json_decode($body, true): an object whose keys are
    "0".."n-1" in order (the empty object too) is a list."""
    if isinstance(value, dict):
        if list(value) == [str(i) for i in range(len(value))]:
            return [_php_array(v) for v in value.values()]
        return {k: _php_array(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_php_array(v) for v in value]
    return value


def php_json(value: Any) -> str:
    """PHP's json_encode() with its default flags: compact, `/` escaped as `\\/`, non-ASCII as \\uXXXX."""
    return json.dumps(_php_array(value), ensure_ascii=True, separators=(",", ":")).replace("/", "\\/")


def _text(name: str, value: Any) -> str | None:
    """The plain text of a value as the gateway signs it; None means 'left out'."""
    if value is None:
        return None
    if isinstance(value, bool):  # PHP's string cast: true -> "1", false -> ""
        return "1" if value else None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(name, "not a finite number")
        return php_float(value)
    if isinstance(value, str):
        return value if value != "" else None
    if isinstance(value, (dict, list)):
        return php_json(value)
    raise ValidationError(name, f"cannot sign a value of type {type(value).__name__}")


def _fields_text(params: Mapping[str, Any]) -> str:
    """The signing string up to the key: `name=text&...` in byte order of the names."""
    parts = []
    for name in sorted(params, key=lambda n: n.encode("utf-8")):
        if name == SIGN_FIELD:
            continue
        text = _text(name, params[name])
        if text is not None:
            parts.append(f"{name}={text}")
    return "&".join(parts)


def _keyed(fields: str, key: str) -> str:
    return f"{fields}&key={key}" if fields else f"key={key}"


def signing_string(params: Mapping[str, Any], key: str) -> str:
    """The exact text that is hashed (contains the key: never log it)."""
    return _keyed(_fields_text(params), key)


def _md5(fields: str, key: str) -> str:
    if not key:
        raise ValueError("an empty key cannot sign")
    return hashlib.md5(_keyed(fields, key).encode("utf-8")).hexdigest().upper()


def sign(params: Mapping[str, Any], key: str) -> str:
    """Return the 32-character upper-case MD5 sign of params under key.

    Raises ValidationError when a value cannot be rendered as text.
    """
    if not key:
        raise ValueError("an empty key cannot sign")
    return _md5(_fields_text(params), key)


def is_valid(params: Mapping[str, Any], keys: Iterable[str]) -> bool:
    """True when params['sign'] matches the sign under any of keys (constant-time compare)."""
    given = params.get(SIGN_FIELD)
    if not isinstance(given, str) or len(given) != 32:
        return False
    given_b = given.upper().encode("ascii", "replace")
    fields = _fields_text(params)  # once, whatever the number of keys
    ok = False
    for key in keys:
        # compare against every key, no early exit, so timing does not tell which key matched
        ok |= hmac.compare_digest(_md5(fields, key).encode("ascii"), given_b)
    return ok


def verify(params: Mapping[str, Any], keys: Iterable[str]) -> None:
    """Raise SignatureError (or ValidationError for a missing sign) unless params verify."""
    given = params.get(SIGN_FIELD)
    if given is None or given == "":
        raise ValidationError(SIGN_FIELD, "missing")
    if not isinstance(given, str) or len(given) != 32:
        raise ValidationError(SIGN_FIELD, "must be a 32-character hex string")
    if not is_valid(params, keys):
        raise SignatureError("sign: does not match any key of the merchant")


def signed(params: Mapping[str, Any], key: str) -> dict[str, Any]:
    """A copy of params with its `sign` set."""
    out = {k: v for k, v in params.items() if k != SIGN_FIELD}
    out[SIGN_FIELD] = sign(out, key)
    return out
