-- v2.0.4: inventory transactions (receipts, issues, adjustments).
-- Each row moves a quantity of an item in a warehouse, optionally for an order.

CREATE TABLE cvs_invn_txn (
    clnt_id    int2          NOT NULL,
    site_id    int2          NOT NULL,
    txn_id     int8          GENERATED ALWAYS AS IDENTITY,
    itm_id     int4          NOT NULL,
    whse_cd    text          NOT NULL,
    txn_typ    char(1)       NOT NULL,
    txn_qty    numeric(14,3) NOT NULL,
    ordr_id    int8,
    txn_dttm   timestamptz   NOT NULL DEFAULT now(),
    rcrd_stat  int2          NOT NULL DEFAULT 1,
    mod_dttm   timestamptz   NOT NULL DEFAULT now(),
    mod_by     text,
    CONSTRAINT cvs_invn_txn_pk PRIMARY KEY (clnt_id, site_id, txn_id),
    CONSTRAINT cvs_invn_txn_itm_fk FOREIGN KEY (clnt_id, site_id, itm_id)
        REFERENCES cvs_itm_mast (clnt_id, site_id, itm_id),
    CONSTRAINT cvs_invn_txn_ordr_fk FOREIGN KEY (clnt_id, site_id, ordr_id)
        REFERENCES cvs_ordr_hdr (clnt_id, site_id, ordr_id),
    CONSTRAINT cvs_invn_txn_txn_typ_ck CHECK (txn_typ IN ('R', 'I', 'A')),
    CONSTRAINT cvs_invn_txn_rcrd_stat_ck CHECK (rcrd_stat IN (0, 1))
);

COMMENT ON TABLE cvs_invn_txn IS 'Inventory movements: R = receipt, I = issue, A = adjustment.';

-- Movements of an item, newest first.
CREATE INDEX cvs_invn_txn_itm_ix ON cvs_invn_txn (clnt_id, site_id, itm_id, txn_dttm DESC);

-- Movements booked against an order (also serves the foreign key).
CREATE INDEX cvs_invn_txn_ordr_ix ON cvs_invn_txn (clnt_id, site_id, ordr_id)
    WHERE ordr_id IS NOT NULL;
