"""The books: what IOTPay kept as fees, what it paid out, what reached the bank (issue 16).

Inputs are documents, imported idempotently and keyed by their own ids: the gateway's settlement
report (`settlements.py`, read by `settlement_file.py` through a column mapping, `mapping.py`)
and bank statements (`bank.py`, read from OFX by `ofx_file.py`, BAI2 by `bai2_file.py`, CSV by
`bank_csv.py`). What they post to the ledger (`entries.py`): a `fee` per settlement line, a
`payout` per batch; a `deposit` per bank transaction once it is matched (`deposits.py`); and
manual `adjustment`s (`adjustments.py`). The rules are PostgreSQL's (sql/010_books.sql).
"""
