"""Hand-written mutations of sql/001_ledger.sql: each weakens or removes one rule the database enforces.

Each is a text replacement that must match exactly once (checked before anything runs), so a
mutation that no longer applies after the schema changed is reported, never silently skipped.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SqlMutation:
    """Replace `old` (found exactly once) with `new`."""

    description: str
    old: str
    new: str


def _drop(trigger: str, on: str, each: str, function: str) -> SqlMutation:
    statement = f"CREATE TRIGGER {trigger} {on}\n    FOR EACH {each} EXECUTE FUNCTION {function}();"
    return SqlMutation(f"trigger {trigger} dropped", statement, f"-- {trigger} dropped")


MUTATIONS: list[SqlMutation] = [
    # balance
    SqlMutation("balance: `total <> 0` -> `total > 0`", "legs < 2 OR total <> 0", "legs < 2 OR total > 0"),
    SqlMutation("balance: `total <> 0` -> `total < 0`", "legs < 2 OR total <> 0", "legs < 2 OR total < 0"),
    SqlMutation("balance: `legs < 2` -> `legs < 1`", "legs < 2 OR total <> 0", "legs < 1 OR total <> 0"),
    SqlMutation("balance: `legs < 2 OR` removed", "legs < 2 OR total <> 0", "total <> 0"),
    SqlMutation("constraint trigger posting_balanced dropped",
                "CREATE CONSTRAINT TRIGGER posting_balanced AFTER INSERT ON postings\n"
                "    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_check_balanced();",
                "-- posting_balanced dropped"),
    SqlMutation("constraint trigger entry_balanced dropped",
                "CREATE CONSTRAINT TRIGGER entry_balanced AFTER INSERT ON journal_entries\n"
                "    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_check_balanced();",
                "-- entry_balanced dropped"),
    # amounts
    SqlMutation("journal_entries: `CHECK (amount > 0)` removed",
                "amount            bigint NOT NULL CHECK (amount > 0),", "amount            bigint NOT NULL,"),
    SqlMutation("journal_entries: `amount > 0` -> `amount >= 0`",
                "amount            bigint NOT NULL CHECK (amount > 0),",
                "amount            bigint NOT NULL CHECK (amount >= 0),"),
    SqlMutation("postings: `CHECK (amount <> 0)` removed",
                "amount      bigint NOT NULL CHECK (amount <> 0),", "amount      bigint NOT NULL,"),
    SqlMutation("postings: currency no longer carried into the account key (CAD and USD may meet)",
                "FOREIGN KEY (account_id, mch_id, currency) REFERENCES accounts (id, mch_id, currency)",
                "FOREIGN KEY (account_id) REFERENCES accounts (id)"),
    # refunds
    SqlMutation("refund: no posted original needed", "IF NOT FOUND THEN\n            RAISE EXCEPTION 'refund % has no",
                "IF false THEN\n            RAISE EXCEPTION 'refund % has no"),
    SqlMutation("refund: merchant check removed", "pay.currency <> NEW.currency OR pay.mch_id <> NEW.mch_id THEN",
                "pay.currency <> NEW.currency THEN"),
    SqlMutation("refund: currency check removed", "pay.currency <> NEW.currency OR pay.mch_id <> NEW.mch_id THEN",
                "pay.mch_id <> NEW.mch_id THEN"),
    SqlMutation("void in full: `pay.refunded <> 0 OR` removed",
                "(pay.refunded <> 0 OR NEW.amount <> pay.amount)", "(NEW.amount <> pay.amount)"),
    SqlMutation("void in full: `NEW.amount <> pay.amount` removed",
                "(pay.refunded <> 0 OR NEW.amount <> pay.amount)", "(pay.refunded <> 0)"),
    SqlMutation("void in full: whole check inert", "IF NEW.kind = 'void' AND (pay.refunded",
                "IF false AND (pay.refunded"),
    SqlMutation("refund: does not draw the refundable down",
                "SET refunded = refunded + NEW.amount", "SET refunded = refunded"),
    # reversals
    SqlMutation("reversal mirror: amount part removed", "IF rev.amount <> NEW.amount OR rev.currency",
                "IF rev.currency"),
    SqlMutation("reversal mirror: currency part removed", "OR rev.currency <> NEW.currency OR rev.mch_id",
                "OR rev.mch_id"),
    SqlMutation("reversal mirror: merchant part removed", "OR rev.mch_id <> NEW.mch_id\n           OR rev.pay_order_id",
                "\n           OR rev.pay_order_id"),
    SqlMutation("reversal mirror: order part removed", "OR rev.pay_order_id <> NEW.pay_order_id OR rev.kind",
                "OR rev.kind"),
    SqlMutation("reversal mirror: reversal of a reversal allowed", " OR rev.kind = 'reversal' THEN", " THEN"),
    SqlMutation("reversal of a refund: refundable not given back",
                "SET refunded = refunded - NEW.amount", "SET refunded = refunded"),
    SqlMutation("reversal of a pay: `AND refunded = 0` removed",
                "WHERE pay_order_id = rev.pay_order_id AND refunded = 0;", "WHERE pay_order_id = rev.pay_order_id;"),
    SqlMutation("journal_entries: reverses_entry_id no longer UNIQUE (an entry reversed twice)",
                "reverses_entry_id bigint UNIQUE REFERENCES", "reverses_entry_id bigint REFERENCES"),
    SqlMutation("journal_entries: one entry per order id no longer unique",
                "CREATE UNIQUE INDEX journal_entries_one_per_order", "CREATE INDEX journal_entries_one_per_order"),
    SqlMutation("journal_entries: CHECK kind refund/void <-> original removed",
                "    CHECK ((kind IN ('refund', 'void')) = (original_order_id IS NOT NULL)),\n", ""),
    SqlMutation("journal_entries: CHECK kind reversal <-> reverses_entry_id removed",
                ",\n    CHECK ((kind = 'reversal') = (reverses_entry_id IS NOT NULL))", ""),
    # cards and orders
    SqlMutation("orders: card CHECK 11 -> 13 digits", r"card_num !~ '\d{11}'", r"card_num !~ '\d{13}'"),
    SqlMutation("orders: CHECK pay_type <-> original_order_id removed",
                ",\n    CHECK ((pay_type = 'pay') = (original_order_id IS NULL))", ""),
    SqlMutation("orders: CHECK on pay_type removed",
                "pay_type           text NOT NULL CHECK (pay_type IN ('pay', 'refund', 'void')),",
                "pay_type           text NOT NULL,"),
    SqlMutation("orders: CHECK on state removed",
                "state              text NOT NULL CHECK (state IN ('pending', 'posted', 'failed', 'parked', 'rejected', 'unknown')),",
                "state              text NOT NULL,"),
    # append-only and the balances guard
    _drop("journal_entries_append_only", "BEFORE UPDATE OR DELETE ON journal_entries", "ROW", "ledger_forbid_change"),
    _drop("journal_entries_no_truncate", "BEFORE TRUNCATE ON journal_entries", "STATEMENT", "ledger_forbid_change"),
    _drop("postings_append_only", "BEFORE UPDATE OR DELETE ON postings", "ROW", "ledger_forbid_change"),
    _drop("postings_no_truncate", "BEFORE TRUNCATE ON postings", "STATEMENT", "ledger_forbid_change"),
    _drop("pay_balances_guard", "BEFORE INSERT OR UPDATE OR DELETE ON pay_balances", "ROW", "ledger_guard_balances"),
    _drop("pay_balances_no_truncate", "BEFORE TRUNCATE ON pay_balances", "STATEMENT", "ledger_forbid_change"),
    SqlMutation("pay_balances guard: `pg_trigger_depth() < 2` -> `< 1`", "pg_trigger_depth() < 2", "pg_trigger_depth() < 1"),
    SqlMutation("refunded_within_amount: `refunded >= 0` removed",
                "CHECK (refunded >= 0 AND refunded <= amount)", "CHECK (refunded <= amount)"),
    SqlMutation("refunded_within_amount: `refunded <= amount` removed",
                "CHECK (refunded >= 0 AND refunded <= amount)", "CHECK (refunded >= 0)"),
    SqlMutation("refunded_within_amount: `refunded <= amount` -> `refunded <= amount + 1`",
                "CHECK (refunded >= 0 AND refunded <= amount)", "CHECK (refunded >= 0 AND refunded <= amount + 1)"),
]


def check(source: str) -> list[str]:
    """Problems with the list against this source: each `old` must occur exactly once."""
    return [f"{m.description}: {source.count(m.old)} matches" for m in MUTATIONS if source.count(m.old) != 1]


def line_of(source: str, mutation: SqlMutation) -> int:
    """1-based line where the mutation applies."""
    return source[: source.index(mutation.old)].count("\n") + 1
