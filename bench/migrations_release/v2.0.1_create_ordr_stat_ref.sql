-- tenantctl: allow tenant-table-needs-clnt-id
-- v2.0.1: order status reference table, with its reference data.
-- cvs_ordr_stat_ref is code data identical in every tenant database (hence no
-- clnt_id, accepted above); the application reads labels and sort order from it.

CREATE TABLE cvs_ordr_stat_ref (
    ordr_stat  text     NOT NULL,
    stat_nm    text     NOT NULL,
    sort_ord   int2     NOT NULL,
    is_term    boolean  NOT NULL DEFAULT false,
    CONSTRAINT cvs_ordr_stat_ref_pk PRIMARY KEY (ordr_stat)
);

COMMENT ON TABLE cvs_ordr_stat_ref IS 'Order statuses: label, display order, terminal or not.';

INSERT INTO cvs_ordr_stat_ref (ordr_stat, stat_nm, sort_ord, is_term) VALUES
    ('OPEN',      'Open',      10, false),
    ('RELEASED',  'Released',  20, false),
    ('ON_HOLD',   'On hold',   30, false),
    ('CLOSED',    'Closed',    40, true),
    ('CANCELLED', 'Cancelled', 50, true);
