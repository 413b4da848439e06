-- v2.0.3: inventory balance per item and warehouse.
-- cvs_invn_bal holds one row per (item, warehouse) with on-hand and reserved
-- quantities; it is maintained by the trigger added in v2.0.5.

CREATE TABLE cvs_invn_bal (
    clnt_id      int2          NOT NULL,
    site_id      int2          NOT NULL,
    itm_id       int4          NOT NULL,
    whse_cd      text          NOT NULL,
    on_hand_qty  numeric(14,3) NOT NULL DEFAULT 0,
    rsrv_qty     numeric(14,3) NOT NULL DEFAULT 0,
    rcrd_stat    int2          NOT NULL DEFAULT 1,
    mod_dttm     timestamptz   NOT NULL DEFAULT now(),
    mod_by       text,
    CONSTRAINT cvs_invn_bal_pk PRIMARY KEY (clnt_id, site_id, itm_id, whse_cd),
    CONSTRAINT cvs_invn_bal_itm_fk FOREIGN KEY (clnt_id, site_id, itm_id)
        REFERENCES cvs_itm_mast (clnt_id, site_id, itm_id),
    CONSTRAINT cvs_invn_bal_rsrv_qty_ck CHECK (rsrv_qty >= 0),
    CONSTRAINT cvs_invn_bal_rcrd_stat_ck CHECK (rcrd_stat IN (0, 1))
);

COMMENT ON TABLE cvs_invn_bal IS 'Inventory balance per item and warehouse (maintained by trigger).';

-- Stock of a warehouse.
CREATE INDEX cvs_invn_bal_whse_ix ON cvs_invn_bal (clnt_id, site_id, whse_cd);
