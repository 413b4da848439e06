-- v2.0.5: keep cvs_invn_bal in step with cvs_invn_txn.
-- An AFTER INSERT trigger upserts the balance row of the item and warehouse:
-- receipts add, issues subtract, adjustments add their signed quantity.

CREATE FUNCTION cvs_invn_txn_bal_fn() RETURNS trigger
    LANGUAGE plpgsql
AS $$
DECLARE
    delta numeric(14,3);
BEGIN
    delta := CASE NEW.txn_typ WHEN 'I' THEN -NEW.txn_qty ELSE NEW.txn_qty END;
    INSERT INTO cvs_invn_bal AS b (clnt_id, site_id, itm_id, whse_cd, on_hand_qty, mod_by)
    VALUES (NEW.clnt_id, NEW.site_id, NEW.itm_id, NEW.whse_cd, delta, NEW.mod_by)
    ON CONFLICT (clnt_id, site_id, itm_id, whse_cd) DO UPDATE
        SET on_hand_qty = b.on_hand_qty + EXCLUDED.on_hand_qty,
            mod_dttm = now(),
            mod_by = EXCLUDED.mod_by;
    RETURN NULL;  -- AFTER trigger: the return value is ignored
END;
$$;

COMMENT ON FUNCTION cvs_invn_txn_bal_fn() IS 'Trigger function: applies each cvs_invn_txn row to cvs_invn_bal.';

CREATE TRIGGER cvs_invn_txn_bal_trg
    AFTER INSERT ON cvs_invn_txn
    FOR EACH ROW EXECUTE FUNCTION cvs_invn_txn_bal_fn();
