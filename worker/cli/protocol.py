"""`iotledger sign` and `iotledger verify`: the IOTPay signature from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from worker.errors import PermanentError
from worker.iotpay import signature
from worker.runtime import app_settings


def _read_object() -> dict[str, Any]:
    text = sys.stdin.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PermanentError(f"stdin: not valid JSON ({exc.msg} at char {exc.pos})") from None
    if not isinstance(data, dict):
        raise PermanentError("stdin: must be one JSON object")
    return data


def _keys(args: argparse.Namespace, params: dict[str, Any]) -> list[str]:
    if args.key:
        return [args.key]
    mch_id = args.mch_id or params.get("mchId")
    if not mch_id:
        raise PermanentError("give --key K, or --mch-id ID of a configured merchant (or an mchId in the object)")
    return list(app_settings().merchants.require(str(mch_id)).keys)


def cmd_sign(args: argparse.Namespace) -> int:
    try:
        params = _read_object()
        print(signature.sign(params, _keys(args, params)[0]))
    except PermanentError as exc:
        print(f"iotledger sign: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    try:
        params = _read_object()
        keys = _keys(args, params)
    except PermanentError as exc:  # no object or no key: a usage mistake, not an invalid sign
        print(f"iotledger verify: {exc}", file=sys.stderr)
        return 2
    try:
        signature.verify(params, keys)
    except PermanentError as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return 1
    print("valid")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    for name, func, text in (
        ("sign", cmd_sign, "print the 32-character IOTPay sign of a JSON object read from stdin"),
        ("verify", cmd_verify, "check the 'sign' of a JSON object read from stdin (exit 0 valid, 1 invalid)"),
    ):
        p = sub.add_parser(
            name,
            help=text,
            description=text[0].upper() + text[1:] + ". Any existing 'sign' field is ignored when signing.",
            epilog="Example: echo '{\"mchId\":\"10000701\",\"payOrderId\":\"PC1\"}' | iotledger "
            + name
            + " --key SECRET",
        )
        who = p.add_mutually_exclusive_group()
        who.add_argument("--key", metavar="K", help="the merchant key to use")
        who.add_argument(
            "--mch-id", metavar="ID", help="use the key(s) of this configured merchant (default: the object's mchId)"
        )
        p.set_defaults(func=func)
