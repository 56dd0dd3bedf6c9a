-- Indexes for the finance console's lookups (issue 17), so that no page scans a whole table:
--   * an order by the merchant's order number when the merchant is not given (orders and
--     expected_orders are keyed by merchant first);
--   * the reconcile mismatches naming one order (by payOrderId, or by merchant order number for
--     an expected order the gateway never reported).
CREATE INDEX orders_mch_order_no_any_idx ON orders (mch_order_no) WHERE mch_order_no IS NOT NULL;
CREATE INDEX expected_orders_mch_order_no_any_idx ON expected_orders (mch_order_no);
CREATE INDEX reconcile_mismatches_order_idx ON reconcile_mismatches (pay_order_id) WHERE pay_order_id IS NOT NULL;
CREATE INDEX reconcile_mismatches_mch_order_idx ON reconcile_mismatches (mch_id, mch_order_no) WHERE pay_order_id IS NULL;
